{#- Minutes after local midnight of an HHMM clock time (2400 = 1440, the following midnight). -#}
{% macro hhmm_to_minutes(column) -%}
    (({{ column }} // 100) * 60 + {{ column }} % 100)
{%- endmacro %}


{#- The UTC instant (TIMESTAMPTZ) of a local wall-clock TIMESTAMP in the data set's time zone (var timezone).
    Independent of the session TimeZone. -#}
{% macro local_to_instant(local_timestamp) -%}
    timezone('{{ var("timezone") }}', {{ local_timestamp }})
{%- endmacro %}


{#- When a daily feature computed from flight day `day` (DATE) becomes valid: the raw batch for day X is
    available at X+1 <batch_available_hour>:00 local time. Returned as a TIMESTAMPTZ instant. -#}
{% macro daily_batch_available_ts(day) -%}
    {{ local_to_instant(
        "(cast(" ~ day ~ " as date) + 1)::timestamp + to_hours(" ~ var('batch_available_hour') ~ ")"
    ) }}
{%- endmacro %}
