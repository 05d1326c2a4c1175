-- One row per route (origin-dest) and flight day with scheduled flights.
{{ entity_daily_activity(entity='route') }}
