{{ config(materialized='table') }}

-- One row per scheduled flight: the entity and label frame for the models. Carries the Feast join keys
-- (tailnum, route, carrier, origin), calendar features known well in advance, and the outcomes.

with

flights as (

    select * from {{ ref('stg_flights') }}

),

calendar as (

    select * from {{ ref('int_calendar_days') }}

),

final as (

    select
        flights.flight_id,
        flights.flight_date,
        flights.sched_dep_ts,
        flights.carrier,
        flights.tailnum,
        flights.origin,
        flights.dest,
        flights.route,
        flights.distance,
        flights.sched_dep_time // 100 as sched_dep_hour,
        {{ hhmm_to_minutes('flights.sched_dep_time') }} as sched_dep_minute_of_day,
        calendar.day_of_week,
        calendar.month,
        calendar.day_of_year,
        calendar.days_to_nearest_holiday,
        flights.arr_delay,
        flights.is_delayed_15,
        flights.is_cancelled,
        flights.is_diverted

    from flights
    left join calendar
        on calendar.calendar_date = flights.flight_date

)

select * from final
order by flight_date, sched_dep_ts, flight_id
