with

source as (

    select * from {{ source('raw', 'flight_schedule') }}

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
        sched_arr_time,
        distance,
        time_hour as sched_dep_hour_ts,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

),

final as (

    select
        -- identity, scheduled departure, route and tail number: the same macros as stg_flights
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
        distance,
        batch_file,
        batch_sha256

    from typed

)

select * from final
