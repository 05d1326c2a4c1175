-- One row per loaded raw batch with its publication and finality instants (the time model, as recorded by ingest).
-- The line below names every raw table, so this view is rebuilt after each load (`new source` adds each table).
-- depends_on:
-- (the columns: the platform's macro load_log, batch_platform/dbt_macros/time_helpers.sql)

{{ load_log() }}
