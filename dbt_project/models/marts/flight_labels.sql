{{ config(materialized='table') }}

-- One row per scheduled flight: the entity and label frame the models train on. Every column before the outcomes
-- comes from the schedule published the evening before (the same frame as flight_schedule, which models score), so
-- training sees exactly what scoring sees; only the outcomes come from the flights batch. A flight whose schedule
-- was never published is not in the frame (it could never have been scored).

with

schedule as (

    {{ scheduled_flight_frame('stg_flight_schedule') }}

),

outcomes as (

    select flight_id, arr_delay, is_delayed_15, is_cancelled, is_diverted
    from {{ ref('stg_flights') }}

),

final as (

    select
        schedule.*,
        outcomes.arr_delay,
        outcomes.is_delayed_15,
        outcomes.is_cancelled,
        outcomes.is_diverted

    from schedule
    inner join outcomes
        on outcomes.flight_id = schedule.flight_id

)

select * from final
order by flight_date, sched_dep_ts, flight_id
