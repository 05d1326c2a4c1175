-- One row per loaded raw batch with its publication and finality instants (the time model, as recorded by ingest).
-- Ingest writes the load log in the same transaction as each raw table's partition, so the log changes whenever
-- one of these tables is loaded (lineage and automation see that through these dependencies):
-- depends_on: {{ source('raw', 'flights') }}, {{ source('raw', 'weather') }}, {{ source('raw', 'flight_schedule') }}
-- depends_on: {{ source('raw', 'planes') }}, {{ source('raw', 'airports') }}, {{ source('raw', 'airlines') }}

with

source as (

    select * from {{ source('raw', 'batch_loads') }}

),

final as (

    select
        replace(table_name, 'raw.', '') as feed,
        case when partition_key = '__all__' then null else cast(partition_key as date) end as batch_date,
        published_at,
        final_at

    from source

)

select * from final
