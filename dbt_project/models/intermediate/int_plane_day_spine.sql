-- One row per plane and day, from its first active day through the last flight day in the data (rows long after
-- its last activity are dropped by the windows, from the past alone: see macros/entity_daily.sql).
{{ entity_day_spine(activity_model='int_plane_daily_activity', entity='tailnum') }}
