-- The entity and label frame of the ridership model: one row per station and service day with its count (the
-- label, final when the day's batch is published, D+1 06:00) and the columns known the day before (the station,
-- the calendar), which station_frame holds for the days still to come.
{{ config(materialized='table') }}

select
    strftime(e.service_date, '%Y-%m-%d') || ':' || e.station as station_day_id,
    e.station,
    e.service_date,
    'chicago' as city,
    c.day_of_week,
    c.month,
    c.day_of_year,
    cast(c.is_federal_holiday as integer) as is_federal_holiday,
    c.days_to_nearest_holiday,
    e.entries

from {{ ref('stg_station_entries') }} e
inner join {{ ref('int_calendar_days') }} c on c.calendar_date = e.service_date
