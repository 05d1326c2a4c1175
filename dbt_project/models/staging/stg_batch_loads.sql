-- One row per loaded raw batch with its publication and finality instants (the time model, as recorded by ingest).
-- Ingest writes the load log in the same transaction as each raw table's partition, so the log changes whenever
-- one of these tables is loaded (lineage and automation see that through these dependencies):
-- depends_on: {{ source('raw', 'flights') }}, {{ source('raw', 'weather') }}, {{ source('raw', 'flight_schedule') }}
-- depends_on: {{ source('raw', 'planes') }}, {{ source('raw', 'airports') }}, {{ source('raw', 'airlines') }}
-- (the columns: the platform's macro load_log, batch_platform/dbt_macros/time_helpers.sql)

{{ load_log() }}
