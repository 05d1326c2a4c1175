-- The entity and label frame of the ridership model: one row per station and service day with its count (the
-- label, final when the day's batch is published, D+1 06:00) and the columns known the day before (the station,
-- the calendar), which station_frame holds for the days still to come.
{{ config(materialized='table') }}

select
    {{ station_day_columns('e') }},
    e.entries

from {{ ref('stg_station_entries') }} e
inner join {{ ref('int_calendar_days') }} c on c.calendar_date = e.service_date
