-- Incremental by day: a build appends the days from its first changed day on; the earlier days are the published
-- generation's rows (batch_platform/lib/feature_increments.py). The hooks set and reset the session variable
-- that bounds the days computed (batch_platform/dbt_macros/parquet_dataset.sql).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='as_of_date',
    pre_hook="{{ features_since_hook() }}",
    post_hook="reset variable batch_platform_features_since",
) }}

-- Trailing 7- and 28-flight-day windows of route activity for every day of the route's spine.
{{ entity_daily_windows(spine_model='int_route_day_spine', activity_model='int_route_daily_activity', entity='route') }}
