{{ config(partition_by='as_of_date') }}

-- Daily plane features for Feast (entity tailnum): one row per plane and as_of_date, computed from the flight
-- days up to and including as_of_date. They use outcomes (delays, cancellations), so a row is valid once every
-- flights batch of its 28-day window is final (time model: flights of D final at D+2 06:00 New York).

with

windows as (

    select * from {{ ref('int_plane_daily_windows') }}
    where {{ features_since_filter('as_of_date') }}

),

validity as (

    {{ feed_validity('flights', 'final', lookback_days=28) }}

),

timed as (

    select
        windows.*,
        validity.valid_from as feature_ts

    from windows
    inner join validity
        on validity.batch_date = windows.as_of_date

),

final as (

    select
        tailnum,
        as_of_date,
        feature_ts,
        feature_ts as plane_valid_from,
        flights_7d as plane_flights_7d,
        flights_28d as plane_flights_28d,
        delay_rate_7d as plane_delay_rate_7d,
        delay_rate_28d as plane_delay_rate_28d,
        mean_arr_delay_7d as plane_mean_arr_delay_7d,
        mean_arr_delay_28d as plane_mean_arr_delay_28d,
        cancel_rate_28d as plane_cancel_rate_28d,
        days_since_last_flight as plane_days_since_last_flight

    from timed

)

select * from final
-- by day first: a point-in-time join reads only the parquet row groups of the days it needs
order by as_of_date, tailnum
