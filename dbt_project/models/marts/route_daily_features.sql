{{ config(partition_by='as_of_date') }}

-- Daily route features for Feast (entity route = origin-dest): one row per route and as_of_date, valid once every
-- flights batch of its 28-day window is final (outcome-derived; time model).

with

windows as (

    select * from {{ ref('int_route_daily_windows') }}
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
        route,
        as_of_date,
        feature_ts,
        feature_ts as route_valid_from,
        flights_7d as route_flights_7d,
        flights_28d as route_flights_28d,
        delay_rate_7d as route_delay_rate_7d,
        delay_rate_28d as route_delay_rate_28d,
        mean_arr_delay_28d as route_mean_arr_delay_28d,
        cancel_rate_28d as route_cancel_rate_28d

    from timed

)

select * from final
-- by day first: a point-in-time join reads only the parquet row groups of the days it needs
order by as_of_date, route
