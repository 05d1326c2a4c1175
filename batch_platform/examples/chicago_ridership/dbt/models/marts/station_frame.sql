-- What the ridership model scores: one row per station in service on a day, published the morning before (the
-- station calendar), with the same columns as station_entry_labels but the count.
{{ config(materialized='table') }}

select
    strftime(s.service_date, '%Y-%m-%d') || ':' || s.station as station_day_id,
    s.station,
    s.service_date,
    'chicago' as city,
    c.day_of_week,
    c.month,
    c.day_of_year,
    cast(c.is_federal_holiday as integer) as is_federal_holiday,
    c.days_to_nearest_holiday

from {{ ref('stg_station_calendar') }} s
inner join {{ ref('int_calendar_days') }} c on c.calendar_date = s.service_date
