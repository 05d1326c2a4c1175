{#- Custom schemas (staging, intermediate, marts, seeds) are suffixed with the feature generation being built:
    `marts__a` or `marts__b` (env BATCH_PLATFORM_DBT_GENERATION, set by the platform's feature build; `a` when
    dbt runs by hand). Readers use the stable schemas `marts`, ... whose views the platform points at the published
    generation once a build and its tests passed (batch_platform/lib/feature_generations.py). Nodes without a custom
    schema go to the target schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}__{{ env_var('BATCH_PLATFORM_DBT_GENERATION', 'a') }}
    {%- endif -%}
{%- endmacro %}
