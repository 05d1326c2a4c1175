select
    service_date,
    station,
    entries

from {{ source('raw', 'station_entries') }}
