{#- The columns of a station's service day known the day before it -- the prediction key, the station, the day, the
    city whose weather applies, the calendar -- from `rows` (a relation with service_date and station) joined to
    int_calendar_days as `c`. station_entry_labels adds the day's count; station_frame is these alone. -#}
{% macro station_day_columns(rows) -%}
    strftime({{ rows }}.service_date, '%Y-%m-%d') || ':' || {{ rows }}.station as station_day_id,
    {{ rows }}.station,
    {{ rows }}.service_date,
    'chicago' as city,
    c.day_of_week,
    c.month,
    c.day_of_year,
    cast(c.is_federal_holiday as integer) as is_federal_holiday,
    c.days_to_nearest_holiday
{%- endmacro %}
