-- Daily weather features for Feast (entity city): the day's weather in Chicago, valid once its batch is published
-- (D+1 06:00): the evening before day D a model sees the weather of D-2 (no forecast is in the data).

with

weather as (

    select * from {{ ref('stg_daily_weather') }}

),

validity as (

    {{ feed_validity('daily_weather', 'published') }}

),

final as (

    select
        'chicago' as city,
        weather.obs_date,
        validity.valid_from as feature_ts,
        validity.valid_from as wx_valid_from,
        weather.temp_min as wx_temp_min,
        weather.temp as wx_temp,
        weather.temp_max as wx_temp_max,
        weather.humidity as wx_humidity,
        weather.wind as wx_wind,
        weather.percip_max as wx_percip_max,
        weather.weather_rain as wx_rain,
        weather.weather_snow as wx_snow,
        weather.weather_cloud as wx_cloud,
        weather.weather_storm as wx_storm

    from weather
    inner join validity on validity.batch_date = weather.obs_date

)

select * from final
order by obs_date
