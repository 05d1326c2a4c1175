-- One row per route and day, from its first active day through the last flight day in the data, ending
-- 28 days (the longest feature window) after its last active day.
{{ entity_day_spine(activity_model='int_route_daily_activity', entity='route', tail_days=28) }}
