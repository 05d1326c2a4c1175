{#- No NULL in any of `columns`: one scan of the model for all of them. A per-column not_null is a query and a node
    of its own in the build (a feature table guards a dozen columns: most of a build's test time went there).
    Fails with one row per column holding NULLs: its name and how many. -#}
{% test columns_not_null(model, columns) %}

with counts as (
    select
    {%- for column in columns %}
        count(*) filter (where {{ adapter.quote(column) }} is null) as nulls_{{ loop.index }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}
)
select column_name, nulls
from (
    {%- for column in columns %}
    select '{{ column }}' as column_name, nulls_{{ loop.index }} as nulls from counts
    {{- " union all" if not loop.last }}
    {%- endfor %}
)
where nulls > 0

{% endtest %}
