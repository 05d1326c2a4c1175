-- Incremental by day (batch_platform/dbt_macros/parquet_dataset.sql, incremental_by_day).
{{ config(**incremental_by_day('as_of_date')) }}

-- Trailing 7- and 28-flight-day windows of carrier activity for every day of the carrier's spine.
{{ entity_daily_windows(spine_model='int_carrier_day_spine', activity_model='int_carrier_daily_activity', entity='carrier') }}
