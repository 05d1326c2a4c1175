{#- Two models agree wherever both hold a day: on every `date_column` value present in both, their rows projected
    on `columns` are the same bag (NULLs compare equal). Fails with each row found on one side only, naming the
    side (a row one side holds more often is returned once per extra copy). Days only one model holds (e.g. the
    schedule of the day after the last loaded flight day) are not compared. Both sides are counted in one grouping
    (one hash table over the two, rather than two EXCEPT ALLs). -#}
{% test same_rows_on_shared_dates(model, compare_model, columns, date_column) %}

with

shared_dates as (

    select distinct {{ date_column }} from {{ model }}
    intersect
    select distinct {{ date_column }} from {{ compare_model }}

),

both_sides as (

    select {{ columns | join(', ') }}, 1 as __in_model, 0 as __in_compared
    from {{ model }}
    where {{ date_column }} in (select {{ date_column }} from shared_dates)

    union all

    select {{ columns | join(', ') }}, 0 as __in_model, 1 as __in_compared
    from {{ compare_model }}
    where {{ date_column }} in (select {{ date_column }} from shared_dates)

),

counted as (

    select {{ columns | join(', ') }}, sum(__in_model) as __in_model, sum(__in_compared) as __in_compared
    from both_sides
    group by all

)

select
    case when __in_model > __in_compared then 'only in the tested model' else 'only in the compared model' end
        as found,
    {{ columns | join(', ') }}
from counted, range(cast(abs(__in_model - __in_compared) as bigint))
where __in_model <> __in_compared

{% endtest %}
