-- Incremental by day (batch_platform/dbt_macros/parquet_dataset.sql, incremental_by_day).
{{ config(**incremental_by_day('obs_date')) }}

-- One row per origin and observation: the observation itself and aggregates over the observations of the
-- same origin in the trailing 24 hours, obs_ts in (obs_ts - 24h, obs_ts]. Timestamps are µs, so the
-- exclusive lower bound is "24 hours minus one microsecond preceding". In an incremental feature build
-- (batch_platform/dbt_macros/parquet_dataset.sql) only the days from its first day on, computed from the
-- observations of two days more (24 hours back from a day after a short DST day reach two days back).

with

weather as (

    select * from {{ ref('stg_weather') }}
    where {{ features_since_filter('obs_date', 2) }}

),

windowed as (

    select
        origin,
        obs_ts,
        obs_date,
        temp,
        dewp,
        humid,
        wind_speed,
        wind_gust,
        precip,
        pressure,
        visib,
        round(sum(precip) over trailing_24h, 2) as precip_24h,
        max(wind_speed) over trailing_24h as max_wind_speed_24h,
        min(visib) over trailing_24h as min_visib_24h,
        -- the mean from an exact (decimal) sum: a double sum's value depends on the order the window adds in,
        -- which differs between a build of every day and one of the last days (same rows, other bytes)
        cast(sum(cast(temp as decimal(18, 4))) over trailing_24h as double)
            / nullif(count(temp) over trailing_24h, 0) as mean_temp_24h,
        count(*) over trailing_24h as obs_24h

    from weather
    window trailing_24h as (
        partition by origin order by obs_ts
        range between (interval 24 hours - interval 1 microsecond) preceding and current row
    )

)

select * from windowed
where {{ features_since_filter('obs_date') }}
