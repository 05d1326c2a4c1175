{#- Composite-key uniqueness (the project uses no packages, so this stands in for
    dbt_utils.unique_combination_of_columns). Fails with one row per duplicated key. -#}
{% test unique_combination(model, combination_of_columns) %}

select
    {{ combination_of_columns | join(',\n    ') }},
    count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1

{% endtest %}
