select
    service_date,
    station

from {{ source('raw', 'station_calendar') }}
