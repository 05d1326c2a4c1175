-- Hourly weather features for Feast (entity origin): one row per origin and observation hour, valid
-- weather_latency_hours after the observation.

with

weather_windows as (

    select * from {{ ref('int_origin_weather_trailing_24h') }}

),

timed as (

    select
        *,
        obs_ts + to_hours({{ var('weather_latency_hours') }}) as feature_ts

    from weather_windows

),

final as (

    select
        origin,
        obs_ts,
        feature_ts,
        feature_ts as wx_valid_from,
        temp as wx_temp,
        dewp as wx_dewp,
        humid as wx_humid,
        wind_speed as wx_wind_speed,
        wind_gust as wx_wind_gust,
        precip as wx_precip,
        pressure as wx_pressure,
        visib as wx_visib,
        precip_24h as wx_precip_24h,
        max_wind_speed_24h as wx_max_wind_speed_24h,
        min_visib_24h as wx_min_visib_24h,
        mean_temp_24h as wx_mean_temp_24h,
        obs_24h as wx_obs_24h

    from timed

)

select * from final
order by origin, obs_ts
