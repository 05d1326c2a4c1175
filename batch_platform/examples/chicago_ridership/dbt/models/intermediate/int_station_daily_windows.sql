-- One row per station and day with a count: the station's entries that day and over the 7 and 28 days ending at
-- it, with the 28 days' mean per weekday (a station's week has a shape: the model picks the target day's).
{{ config(materialized='table') }}

with

entries as (

    select * from {{ ref('stg_station_entries') }}

),

windows as (

    select
        station,
        service_date as as_of_date,
        entries as station_entries_1d,
        avg(entries) over w7 as station_mean_7d,
        avg(entries) over w28 as station_mean_28d,
        count(*) over w28 as station_days_28d,
        {%- for dow in range(1, 8) %}
        avg(entries) filter (where isodow(service_date) = {{ dow }}) over w28 as station_mean_dow{{ dow }}_28d,
        {%- endfor %}
        stddev_samp(entries) over w28 as station_std_28d

    from entries
    window
        w7 as (partition by station order by service_date range between interval 6 days preceding and current row),
        w28 as (partition by station order by service_date range between interval 27 days preceding and current row)

)

select * from windows
