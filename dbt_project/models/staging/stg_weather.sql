with

source as (

    select * from {{ source('raw', 'weather') }}

),

renamed as (

    select
        origin,
        time_hour as obs_ts,
        make_date(year, month, day) as obs_date,
        hour as obs_hour,
        temp,
        dewp,
        humid,
        wind_dir,
        wind_speed,
        wind_gust,
        precip,
        pressure,
        visib,
        _batch_file as batch_file,
        _batch_sha256 as batch_sha256

    from source

)

select * from renamed
