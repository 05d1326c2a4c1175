-- One row per loaded raw batch with its publication and finality instants (the time model, as recorded by ingest).
-- The line below names every raw table, so this view is rebuilt after each load (`new source` adds each table).
-- depends_on:

select
    replace(table_name, 'raw.', '') as feed,
    case when partition_key = '__all__' then null else cast(partition_key as date) end as batch_date,
    published_at,
    final_at

from {{ source('raw', 'batch_loads') }}
