{#- Where the feature marts (materialized='external') are written: <features_dir>/<model>.<format>.
    Overrides dbt-duckdb's default (which uses the profile's external_root) so the features directory is one
    project var, read from BATCH_PLATFORM_FEATURES_DIR like every other platform path. Called at run time by the
    external materialization. -#}
{%- macro external_location(relation, config) -%}
    {%- set format = config.get('format', 'parquet') -%}
    {{- (var('features_dir') | trim).rstrip('/') -}}/{{ relation.identifier }}.{{ format }}
{%- endmacro -%}


{#- DuckDB's COPY ... TO '<file>' does not create missing directories, but a partitioned COPY of zero rows creates
    its target directory (one level) and writes nothing. Used as a pre-hook of the external marts so that a
    fresh data dir works; existing directories and their files are left untouched (overwrite_or_ignore). -#}
{%- macro ensure_directory(path) -%}
    {%- set path = (path | trim).rstrip('/') -%}
    {%- set parts = path.split('/') -%}
    {%- set prefix = namespace(value='/' if path.startswith('/') else '') -%}
    {%- for part in parts if part not in ('', '.') -%}
        {%- set prefix.value = prefix.value ~ part -%}
        {%- if part != '..' %}
copy (select 1 as _partition, 1 as _value where false)
  to '{{ prefix.value | replace("'", "''") }}' (format parquet, partition_by (_partition), overwrite_or_ignore true);
        {%- endif -%}
        {%- set prefix.value = prefix.value ~ '/' -%}
    {%- endfor -%}
{%- endmacro -%}


{#- Pre-hook of the marts folder: external (file) models need the features directory to exist. -#}
{%- macro ensure_features_dir() -%}
    {%- if model.config.materialized == 'external' -%}
        {{ ensure_directory(var('features_dir')) }}
    {%- endif -%}
{%- endmacro -%}
