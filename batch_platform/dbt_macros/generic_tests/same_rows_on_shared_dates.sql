{#- Two models agree wherever both hold a day: on every `date_column` value present in both, their rows projected
    on `columns` are the same bag (NULLs compare equal). Fails with each row found on one side only, naming the
    side. Days only one model holds (e.g. the schedule of the day after the last loaded flight day) are not
    compared. -#}
{% test same_rows_on_shared_dates(model, compare_model, columns, date_column) %}

with

shared_dates as (

    select distinct {{ date_column }} from {{ model }}
    intersect
    select distinct {{ date_column }} from {{ compare_model }}

),

this_side as (

    select {{ columns | join(', ') }}
    from {{ model }}
    where {{ date_column }} in (select {{ date_column }} from shared_dates)

),

other_side as (

    select {{ columns | join(', ') }}
    from {{ compare_model }}
    where {{ date_column }} in (select {{ date_column }} from shared_dates)

),

only_here as (

    select * from this_side
    except all
    select * from other_side

),

only_there as (

    select * from other_side
    except all
    select * from this_side

)

select 'only in the tested model' as found, * from only_here
union all
select 'only in the compared model' as found, * from only_there

{% endtest %}
