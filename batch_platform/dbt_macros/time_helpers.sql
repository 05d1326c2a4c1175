{#- Minutes after local midnight of an HHMM clock time (2400 = 1440, the following midnight). -#}
{% macro hhmm_to_minutes(column) -%}
    (({{ column }} // 100) * 60 + {{ column }} % 100)
{%- endmacro %}


{#- The UTC instant (TIMESTAMPTZ) of a local wall-clock TIMESTAMP in the data set's time zone (var timezone).
    Independent of the session TimeZone. -#}
{% macro local_to_instant(local_timestamp) -%}
    timezone('{{ var("timezone") }}', {{ local_timestamp }})
{%- endmacro %}


{#- When a feature row of day `batch_date` is valid: the newest `valid_when` instant ('published' or 'final') of
    the `feed`'s batches it reads, the `lookback_days` days ending at its day (time model:
    batch_platform/time_model.yaml, `features:`). One row per day whose own batch is loaded; a day without its batch
    has no valid row. For a snapshot feed (no days) the one row has batch_date null. -#}
{% macro feed_validity(feed, valid_when, lookback_days=1) -%}
    select
        batch_date,
        max({{ valid_when }}_at) over (
            order by batch_date
            range between interval {{ lookback_days - 1 }} days preceding and current row
        ) as valid_from

    from {{ ref('stg_batch_loads') }}
    where feed = '{{ feed }}'
{%- endmacro %}


{#- The load log as every project's staging view reads it (`stg_batch_loads`, which feed_validity reads): one row
    per loaded raw batch with its feed, its day (null for a snapshot) and when it was published and is final. -#}
{% macro load_log() -%}
    select
        replace(table_name, 'raw.', '') as feed,
        case when partition_key = '__all__' then null else cast(partition_key as date) end as batch_date,
        published_at,
        final_at

    from {{ source('raw', 'batch_loads') }}
{%- endmacro %}
