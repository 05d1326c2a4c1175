{#- Feature tables as parquet datasets: a folder <features_dir>/<model>/ that Feast, DuckDB and pyarrow read whole.

    materialized='parquet_dataset' with partition_by='<a DATE column>' writes one hive partition per day
    (<model>/<column>=YYYY-MM-DD/data_0.parquet) and builds incrementally: a build that names a first day for the
    model in BATCH_PLATFORM_FEATURES_SINCE (JSON {model: 'YYYY-MM-DD'}, set by the platform's feature build,
    batch_platform/lib/feature_increments.py) computes and writes only the days from then on, next to the earlier
    days' partitions that the platform carried over from the published generation. Without one (a first build, a
    changed definition, --full-refresh, or dbt run by hand) it computes every day and replaces the folder.

    The first day reaches the SQL as the DuckDB session variable batch_platform_features_since (a DATE, NULL for
    every day), set only while this model's query runs: models read it with features_since_filter() to bound what
    they compute (see dbt_project/macros/entity_daily.sql), and anything else reading the same views sees all days.
    The intermediate tables such a dataset reads (the trailing windows) are dbt 'incremental' models keyed on their
    day (delete+insert by unique_key) whose pre-hook, features_since_hook(), sets the same variable.

    The rows are computed into a table first, sorted by every column (left to right), then each day is copied to
    its own file in that order: the same rows give the same bytes, so a day written by an incremental build is byte
    for byte the file a full build writes (tests/test_feature_increments.py). Without partition_by the folder holds
    one file, rewritten whole. -#}

{%- macro parquet_dataset_location(relation) -%}
    {{- (var('features_dir') | trim).rstrip('/') -}}/{{ relation.identifier }}
{%- endmacro -%}


{#- SQL: `column` is on or after the build's first day minus `days_before` days (always true in a build of every
    day). DuckDB folds getvariable() into a constant, so the filter reaches the scans below windows and groups. -#}
{%- macro features_since_filter(column, days_before=0) -%}
    (getvariable('batch_platform_features_since') is null
     or {{ column }} >= cast(getvariable('batch_platform_features_since') as date) - {{ days_before | int }})
{%- endmacro -%}


{%- macro _sql_string(value) -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro -%}


{#- The first day this build rewrites of the model `name` (a 'YYYY-MM-DD' string), or none for every day. -#}
{%- macro features_since(name) -%}
    {%- if flags.FULL_REFRESH -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return((fromjson(env_var('BATCH_PLATFORM_FEATURES_SINCE', '{}')) or {}).get(name)) }}
{%- endmacro -%}


{#- Pre-hook of a model materialized 'incremental' by day (unique_key: its DATE column; the intermediate windows
    that the daily feature datasets read): the session variable its SQL (and the views it reads) bound their days
    with, for an incremental run; null (every day) when the table is built whole. Its post-hook resets it. -#}
{%- macro features_since_hook() -%}
    {%- set since = features_since(this.identifier) if is_incremental() else none -%}
    set variable batch_platform_features_since = {{ ("date " ~ _sql_string(since)) if since else "null::date" }}
{%- endmacro -%}


{#- The config of a table built by day (`{{ config(**incremental_by_day('as_of_date')) }}`): dbt's incremental
    materialization keyed on `day_column` (delete+insert of the days computed); a build appends the days from its
    first changed day on, the earlier days being the published generation's rows (batch_platform/lib/
    feature_increments.py). The hooks set and reset the session variable that bounds the days computed. -#}
{%- macro incremental_by_day(day_column) -%}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'delete+insert',
        'unique_key': day_column,
        'pre_hook': "{{ features_since_hook() }}",
        'post_hook': "reset variable batch_platform_features_since",
    }) }}
{%- endmacro -%}


{% materialization parquet_dataset, adapter="duckdb" %}

  {%- set location = parquet_dataset_location(this) -%}
  {%- set partition_by = config.get('partition_by') -%}
  {%- set since = features_since(this.identifier) if partition_by else none -%}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set rows_relation = make_intermediate_relation(this.incorporate(type='table'), suffix='__dbt_rows') -%}

  {{ drop_relation_if_exists(load_cached_relation(rows_relation)) }}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% call statement('since') -%}
    set variable batch_platform_features_since = {{ ("date " ~ _sql_string(since)) if since else "null::date" }}
  {%- endcall %}
  {#- sorted by every column, left to right, at the top level of the statement: DuckDB keeps a top-level order in
      the table it creates, and a COPY of it to one file keeps the table's order -#}
  {% call statement('main') -%}
    create table {{ rows_relation }} as select * from (
      {{ compiled_code }}
    ) order by all
  {%- endcall %}
  {% call statement('unset') -%}
    reset variable batch_platform_features_since
  {%- endcall %}

  {% call statement('folder') -%}
    {{ ensure_directory(location) }}
  {%- endcall %}
  {%- if partition_by %}
    {%- set column = adapter.quote(partition_by) -%}
    {%- if not since %}
      {#- every day: empty the folder (dbt run by hand over an earlier build) -#}
      {% call statement('empty_folder') -%}
        copy (select 1 as _partition, 1 as _value where false) to {{ _sql_string(location) }}
          (format parquet, partition_by (_partition), overwrite)
      {%- endcall %}
    {%- endif %}
    {#- One COPY per day to its own file, as a hive partition (the day in the folder name, not in the file). Not
        one partitioned COPY: its writer orders rows by thread, not as the table. Only the days from `since` on: the
        earlier days' files are links to the published generation's, which are never written. -#}
    {#- every column written nullable: DuckDB writes a column REQUIRED when the statistics of what it copies prove
        it has no NULL, and those depend on which days the table holds ([c][1]: the value, no longer provably set) -#}
    {%- set values = [] -%}
    {%- for c in adapter.get_columns_in_relation(rows_relation) if c.name != partition_by -%}
      {%- do values.append('[' ~ adapter.quote(c.name) ~ '][1] as ' ~ adapter.quote(c.name)) -%}
    {%- endfor -%}
    {%- set days = run_query("select distinct strftime(" ~ column ~ ", '%Y-%m-%d') from " ~ rows_relation
                             ~ (" where " ~ column ~ " >= date " ~ _sql_string(since) if since else "")
                             ~ " order by 1").columns[0].values() -%}
    {%- for batch in days | batch(50) %}
      {% call statement('days') -%}
        {%- for day in batch %}
        {%- set folder = location ~ '/' ~ partition_by ~ '=' ~ day %}
        copy (select 1 as _partition, 1 as _value where false) to {{ _sql_string(folder) }}
          (format parquet, partition_by (_partition), overwrite_or_ignore);
        copy (select {{ values | join(', ') }} from {{ rows_relation }}
              where {{ column }} = date {{ _sql_string(day) }})
          to {{ _sql_string(folder ~ '/data_0.parquet') }} (format parquet);
        {%- endfor %}
      {%- endcall %}
    {%- endfor %}
  {%- else %}
    {% call statement('write') -%}
      copy (select * from {{ rows_relation }}) to {{ _sql_string(location ~ '/data_0.parquet') }} (format parquet)
    {%- endcall %}
  {%- endif %}

  {#- A dataset without any day (no rows yet) is one empty file with the columns, so that readers see its schema -#}
  {%- if partition_by -%}
    {%- set files = run_query("select count(*) from glob(" ~ _sql_string(location ~ '/*/*.parquet') ~ ")")[0][0] -%}
    {%- if files == 0 %}
      {% call statement('empty') -%}
        copy (select * from {{ rows_relation }} where false) to {{ _sql_string(location ~ '/empty.parquet') }}
          (format parquet)
      {%- endcall %}
    {%- endif -%}
  {%- endif -%}

  {#- the model's columns in its order (a hive partition's column is read last from the files) -#}
  {% call statement('view') -%}
    create or replace view {{ target_relation }} as (
      select
      {%- for column in adapter.get_columns_in_relation(rows_relation) %}
        {{ adapter.quote(column.name) }}{{ ',' if not loop.last }}
      {%- endfor %}
      from read_parquet({{ _sql_string(location) }})
    )
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ drop_relation_if_exists(rows_relation) }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}
