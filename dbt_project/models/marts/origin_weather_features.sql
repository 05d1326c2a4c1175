{{ config(partition_by='obs_date') }}

-- Daily weather features for Feast (entity origin): one row per origin and observation day, from the weather batch
-- of that day, which is published the next morning (time model: a daily feed). The row is valid from then on, so the
-- evening before flight day D (the prediction cutoff) the newest weather a model sees is that of D-2: the last
-- observation of the day and the aggregates of the 24 hours ending at it.

with

weather_windows as (

    select * from {{ ref('int_origin_weather_trailing_24h') }}
    where {{ features_since_filter('obs_date') }}

),

last_of_day as (

    select *
    from weather_windows
    qualify row_number() over (partition by origin, obs_date order by obs_ts desc) = 1

),

validity as (

    {{ feed_validity('weather', 'published') }}

),

timed as (

    select
        last_of_day.*,
        validity.valid_from as feature_ts

    from last_of_day
    inner join validity
        on validity.batch_date = last_of_day.obs_date

),

final as (

    select
        origin,
        obs_date,
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
-- by day first: a point-in-time join reads only the parquet row groups of the days it needs
order by obs_date, origin
