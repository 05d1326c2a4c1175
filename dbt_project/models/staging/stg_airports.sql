with

source as (

    select * from {{ source('raw', 'airports') }}

),

renamed as (

    select
        faa,
        name as airport_name,
        lat,
        lon,
        alt as altitude_ft,
        tz as utc_offset_hours,
        dst as dst_code,
        tzone as time_zone,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

)

select * from renamed
