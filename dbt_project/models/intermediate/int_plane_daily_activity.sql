-- One row per plane and flight day with scheduled flights. Flights without a known tail number
-- (tailnum 'UNKNOWN', all of them cancelled) are not attributed to any plane.
{{ entity_daily_activity(entity='tailnum', where="tailnum <> 'UNKNOWN'") }}
