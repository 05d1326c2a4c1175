-- One row per origin and observation: the observation itself and aggregates over the observations of the
-- same origin in the trailing 24 hours, obs_ts in (obs_ts - 24h, obs_ts]. Timestamps are µs, so the
-- exclusive lower bound is "24 hours minus one microsecond preceding".

with

weather as (

    select * from {{ ref('stg_weather') }}

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
        avg(temp) over trailing_24h as mean_temp_24h,
        count(*) over trailing_24h as obs_24h

    from weather
    window trailing_24h as (
        partition by origin order by obs_ts
        range between (interval 24 hours - interval 1 microsecond) preceding and current row
    )

)

select * from windowed
