{#- One row per calendar day between the first and the last holiday of `holidays` (a relation with a
    holiday_date column, e.g. ref('us_federal_holidays'), the platform's seed; inside that range the nearest
    holiday is always known), with the calendar attributes used as features known in advance: day_of_week (ISO,
    Monday 1), month, day_of_year, is_federal_holiday, days_to_nearest_holiday. -#}
{% macro calendar_days(holidays) %}
with

holidays as (

    select holiday_date from {{ holidays }}

),

days as (

    select cast(unnest(generate_series(
        (select min(holiday_date) from holidays),
        (select max(holiday_date) from holidays),
        interval 1 day
    )) as date) as calendar_date

),

marked as (

    select days.calendar_date, holidays.holiday_date

    from days
    left join holidays on days.calendar_date = holidays.holiday_date

),

nearest_holiday as (

    -- distance to the last holiday on or before the day and to the first on or after it, as a running max and
    -- min over the days in date order (a days × holidays cross join would grow with the square of the range)
    select
        calendar_date,
        least(
            calendar_date - max(holiday_date) over (
                order by calendar_date rows between unbounded preceding and current row
            ),
            min(holiday_date) over (
                order by calendar_date rows between current row and unbounded following
            ) - calendar_date
        ) as days_to_nearest_holiday

    from marked

),

final as (

    select
        calendar_date,
        isodow(calendar_date) as day_of_week,
        month(calendar_date) as month,
        dayofyear(calendar_date) as day_of_year,
        days_to_nearest_holiday = 0 as is_federal_holiday,
        days_to_nearest_holiday

    from nearest_holiday

)

select * from final

{% endmacro %}


{#- The US federal holidays 2000-2045 as a relation (holiday_date, holiday_name, nominal_date): the flights
    project's seed file, read in place, for a project without that seed. -#}
{% macro us_federal_holidays() -%}
    {%- set path = env_var("BATCH_PLATFORM_HOLIDAYS_CSV", "../../../../dbt_project/seeds/us_federal_holidays.csv") %}
    (select * from read_csv('{{ path | replace("'", "''") }}', header = true,
        columns = {'holiday_date': 'DATE', 'holiday_name': 'VARCHAR', 'nominal_date': 'DATE'}))
{%- endmacro %}
