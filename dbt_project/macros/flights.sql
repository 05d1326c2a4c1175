{#- The columns of a flight that its schedule already determines, shared by stg_flights and stg_flight_schedule so
    a flight and its schedule can never disagree on them. Each macro takes the (typed) columns it is computed
    from; the defaults are the names both staging models use. -#}


{#- Flight identity: '<flight_date YYYY-MM-DD>_<carrier>_<flight>_<origin>', e.g. 2013-01-01_UA_1545_EWR. -#}
{% macro flight_id(flight_date='flight_date', carrier='carrier', flight='flight', origin='origin') -%}
    strftime({{ flight_date }}, '%Y-%m-%d')
            || '_' || {{ carrier }}
            || '_' || cast({{ flight }} as varchar)
            || '_' || {{ origin }}
{%- endmacro %}


{#- Scheduled departure instant: the local flight day + scheduled HHMM, read as New York wall-clock time. -#}
{% macro flight_sched_dep_ts(flight_date='flight_date', sched_dep_time='sched_dep_time') -%}
    {{ local_to_instant(flight_date ~ "::timestamp + to_minutes(" ~ hhmm_to_minutes(sched_dep_time) ~ ")") }}
{%- endmacro %}


{#- Route, the Feast entity key of the route features: origin-dest, e.g. JFK-LAX. -#}
{% macro flight_route(origin='origin', dest='dest') -%}
    {{ origin }} || '-' || {{ dest }}
{%- endmacro %}


{#- Tail number, the Feast entity key of the plane features: 'UNKNOWN' when the source has none. -#}
{% macro flight_tailnum(tailnum='raw_tailnum') -%}
    coalesce({{ tailnum }}, 'UNKNOWN')
{%- endmacro %}
