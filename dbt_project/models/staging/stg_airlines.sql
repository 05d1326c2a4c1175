with

source as (

    select * from {{ source('raw', 'airlines') }}

),

renamed as (

    select
        carrier,
        name as carrier_name,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

)

select * from renamed
