{#- Row-level assertion (stands in for dbt_utils.expression_is_true): fails with every row for which the SQL
    expression is false. As in dbt_utils, a NULL result passes; pair with not_null where NULL is wrong.
    On a column, the expression is appended to the column name, e.g. `expression: ">= 0"`. -#}
{% test expression_is_true(model, expression, column_name=none) %}

select *
from {{ model }}
where not ({{ column_name ~ ' ' if column_name is not none else '' }}{{ expression }})

{% endtest %}
