select
    service_date as obs_date,
    temp_min,
    temp,
    temp_max,
    humidity,
    wind,
    percip_max,
    weather_rain,
    weather_snow,
    weather_cloud,
    weather_storm

from {{ source('raw', 'daily_weather') }}
