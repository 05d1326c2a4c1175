{#- Custom schemas are used as they are (staging, intermediate, marts, seeds), not prefixed with the target
    schema (dbt's default would give main_staging). Nodes without a custom schema go to the target schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
