-- What the ridership model scores: one row per station in service on a day, published the morning before (the
-- station calendar), with the same columns as station_entry_labels but the count.
{{ config(materialized='table') }}

select
    {{ station_day_columns('s') }}

from {{ ref('stg_station_calendar') }} s
inner join {{ ref('int_calendar_days') }} c on c.calendar_date = s.service_date
