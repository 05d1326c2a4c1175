{#- The per-flight frame of the models: identity, the Feast join keys (tailnum, route, carrier, origin), and the
    schedule and calendar features known before the flight day, followed by `extra_columns` of the staging model
    (the outcomes, for flight_labels). flight_labels (over stg_flights) and flight_schedule (over
    stg_flight_schedule) are both this macro, so a flight gets the same values from either. -#}
{% macro scheduled_flight_frame(flights_model, extra_columns=()) %}

with

flights as (

    select * from {{ ref(flights_model) }}

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
        calendar.days_to_nearest_holiday
        {%- for column in extra_columns %},
        flights.{{ column }}
        {%- endfor %}

    from flights
    left join calendar
        on calendar.calendar_date = flights.flight_date

)

select * from final
order by flight_date, sched_dep_ts, flight_id

{% endmacro %}
