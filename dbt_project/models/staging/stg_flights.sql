with

source as (

    select * from {{ source('raw', 'flights') }}

),

typed as (

    select
        make_date(year, month, day) as flight_date,
        carrier,
        flight,
        origin,
        dest,
        tailnum as raw_tailnum,
        sched_dep_time,
        dep_time,
        dep_delay,
        sched_arr_time,
        arr_time,
        arr_delay,
        air_time,
        distance,
        time_hour as sched_dep_hour_ts,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

),

final as (

    select
        -- identity, scheduled departure, route and tail number: the same macros as stg_flight_schedule
        {{ flight_id() }} as flight_id,
        flight_date,
        {{ flight_sched_dep_ts() }} as sched_dep_ts,
        sched_dep_hour_ts,
        carrier,
        flight,
        origin,
        dest,
        {{ flight_route() }} as route,
        {{ flight_tailnum() }} as tailnum,
        sched_dep_time,
        sched_arr_time,
        dep_time,
        arr_time,
        dep_delay,
        arr_delay,
        air_time,
        distance,
        dep_time is null as is_cancelled,
        dep_time is not null and arr_delay is null as is_diverted,
        arr_delay > 15 as is_delayed_15,
        batch_file,
        batch_sha256

    from typed

)

select * from final
