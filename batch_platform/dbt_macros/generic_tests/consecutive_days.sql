{#- Every group (e.g. an entity of a day spine) has one row per day from its first to its last day: no day is
    missing. Together with a uniqueness test on (group, day) this makes ROWS window frames equal to day
    ranges. Fails with one row per group that has gaps. -#}
{% test consecutive_days(model, group_by, date_column) %}

select
    {{ group_by }},
    count(distinct {{ date_column }}) as n_days,
    min({{ date_column }}) as first_day,
    max({{ date_column }}) as last_day
from {{ model }}
group by {{ group_by }}
having count(distinct {{ date_column }}) <> max({{ date_column }}) - min({{ date_column }}) + 1

{% endtest %}
