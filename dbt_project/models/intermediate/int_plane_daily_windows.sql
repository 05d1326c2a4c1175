-- Trailing 7- and 28-flight-day windows of plane activity for every day of the plane's spine.
{{ entity_daily_windows(spine_model='int_plane_day_spine', activity_model='int_plane_daily_activity', entity='tailnum') }}
