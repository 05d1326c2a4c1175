-- One row per loaded raw batch with its publication and finality instants (the time model, as recorded by ingest).
-- depends_on: {{ source('raw', 'station_entries') }}, {{ source('raw', 'station_calendar') }}, {{ source('raw', 'daily_weather') }}
-- (the columns: the platform's macro load_log, batch_platform/dbt_macros/time_helpers.sql)

{{ load_log() }}
