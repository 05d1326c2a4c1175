-- Static plane attributes for Feast (entity tailnum), from the aircraft registry snapshot, valid from when that
-- snapshot was published (time model; the replay publishes it the day before the first data day).

with

planes as (

    select * from {{ ref('stg_planes') }}

),

validity as (

    {{ feed_validity('planes', 'published') }}

),

final as (

    select
        planes.tailnum,
        validity.valid_from as feature_ts,
        validity.valid_from as plane_attr_valid_from,
        planes.year_built as plane_year_built,
        planes.seats as plane_seats,
        planes.engines as plane_engines,
        planes.engine_type as plane_engine_type,
        planes.manufacturer as plane_manufacturer,
        planes.model as plane_model

    from planes
    cross join validity

)

select * from final
order by tailnum
