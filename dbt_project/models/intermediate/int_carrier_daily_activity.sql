-- One row per carrier and flight day with scheduled flights.
{{ entity_daily_activity(entity='carrier') }}
