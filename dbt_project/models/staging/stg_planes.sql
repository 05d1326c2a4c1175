with

source as (

    select * from {{ source('raw', 'planes') }}

),

renamed as (

    select
        tailnum,
        year as year_built,
        type as aircraft_type,
        manufacturer,
        model,
        engines,
        seats,
        speed as cruise_speed_mph,
        engine as engine_type,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

)

select * from renamed
