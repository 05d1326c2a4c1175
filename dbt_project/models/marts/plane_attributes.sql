-- Static plane attributes for Feast (entity tailnum), from the aircraft registry snapshot. Reference data
-- valid "forever": feature_ts is a fixed instant well before the data set.

with

planes as (

    select * from {{ ref('stg_planes') }}

),

final as (

    select
        tailnum,
        timestamptz '2000-01-01 00:00:00+00' as feature_ts,
        timestamptz '2000-01-01 00:00:00+00' as plane_attr_valid_from,
        year_built as plane_year_built,
        seats as plane_seats,
        engines as plane_engines,
        engine_type as plane_engine_type,
        manufacturer as plane_manufacturer,
        model as plane_model

    from planes

)

select * from final
order by tailnum
