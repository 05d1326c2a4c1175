{#- Building blocks of the per-entity daily features (plane, route, carrier). Each intermediate model calls one
    of these with its entity column, so the three entities share exactly the same definitions. -#}


{#- One row per entity and flight day with at least one scheduled flight: counts and sums of the day's flights.
    `n_known_outcome` counts flights with an arrival delay (neither cancelled nor diverted).
    In an incremental feature build (batch_platform/dbt_macros/parquet_dataset.sql) only the days from
    `lookback_days` before the build's first day: what entity_daily_windows needs for the days it rebuilds (its
    longest window, 28 days, and its tail, 28 days after the last active day). -#}
{% macro entity_daily_activity(entity, where=none, lookback_days=28) %}

with

flights as (

    select * from {{ ref('stg_flights') }}
    where {{ features_since_filter('flight_date', lookback_days) }}
    {%- if where %}
        and {{ where }}
    {%- endif %}

),

daily as (

    select
        {{ entity }},
        flight_date,
        count(*) as n_flights,
        count(*) filter (where is_cancelled) as n_cancelled,
        count(*) filter (where is_diverted) as n_diverted,
        count(arr_delay) as n_known_outcome,
        count(*) filter (where is_delayed_15) as n_delayed_15,
        cast(coalesce(sum(arr_delay), 0) as bigint) as sum_arr_delay,
        count(dep_delay) as n_known_dep_delay,
        cast(coalesce(sum(dep_delay), 0) as bigint) as sum_dep_delay

    from flights
    group by {{ entity }}, flight_date

)

select * from daily

{% endmacro %}


{#- Entity × day spine: for every entity, each day from its first active day through the last flight day in
    the data. Makes the rolling windows explicit on days the entity did not fly. It must not end at the entity's
    *last* active day (+ a tail): that day is in the future of every earlier row, so a spine built later would hold
    rows (a plane back in service after a long gap) that one built at the time could not (training/serving skew).
    Rows long after the last activity are dropped by entity_daily_windows instead, from the past alone. -#}
{% macro entity_day_spine(activity_model, entity) %}

with

activity as (

    select {{ entity }}, flight_date from {{ ref(activity_model) }}

),

data_bounds as (

    select max(flight_date) as last_flight_date from {{ ref('stg_flights') }}

),

entity_bounds as (

    select
        {{ entity }},
        min(flight_date) as first_active_date

    from activity
    group by {{ entity }}

),

spine as (

    select
        entity_bounds.{{ entity }},
        cast(unnest(generate_series(
            entity_bounds.first_active_date,
            data_bounds.last_flight_date,
            interval 1 day
        )) as date) as as_of_date

    from entity_bounds
    cross join data_bounds

)

select * from spine

{% endmacro %}


{#- Trailing windows per entity and as_of_date over the `windows` (in flight days, ending at as_of_date
    inclusive: a 7-day window on Jan 8 covers Jan 2..Jan 8). Rates are NULL when their denominator is zero.
    Days more than `tail_days` after the entity's last active day *up to that day* have no row (every window is
    empty by then); this depends on the past only, so the rows are the same whenever the model is built.
    The spine has exactly one row per entity and day with no day missing (tested: unique_combination and
    consecutive_days on the spine), so a window of N days is the current row and the N-1 rows before it.
    ROWS frames take about half the time of the equivalent RANGE frames on the full year.
    In an incremental feature build only the days from the build's first day on (the activity view then starts
    `lookback_days` before it, so those days' windows and tails are whole; the spine starts at the first active
    day of that stretch, and the days before it add nothing to any window). -#}
{% macro entity_daily_windows(spine_model, activity_model, entity, windows=(7, 28), tail_days=28) %}

with

spine as (

    select * from {{ ref(spine_model) }}

),

activity as (

    select * from {{ ref(activity_model) }}

),

daily as (

    select
        spine.{{ entity }},
        spine.as_of_date,
        coalesce(activity.n_flights, 0) as n_flights,
        coalesce(activity.n_cancelled, 0) as n_cancelled,
        coalesce(activity.n_known_outcome, 0) as n_known_outcome,
        coalesce(activity.n_delayed_15, 0) as n_delayed_15,
        coalesce(activity.sum_arr_delay, 0) as sum_arr_delay,
        coalesce(activity.n_known_dep_delay, 0) as n_known_dep_delay,
        coalesce(activity.sum_dep_delay, 0) as sum_dep_delay

    from spine
    left join activity
        on activity.{{ entity }} = spine.{{ entity }}
        and activity.flight_date = spine.as_of_date

),

windowed as (

    select
        {{ entity }},
        as_of_date,
        {%- for days in windows %}
        cast(sum(n_flights) over w{{ days }} as bigint) as flights_{{ days }}d,
        cast(sum(n_cancelled) over w{{ days }} as bigint) as cancelled_{{ days }}d,
        cast(sum(n_known_outcome) over w{{ days }} as bigint) as known_outcome_{{ days }}d,
        cast(sum(n_delayed_15) over w{{ days }} as bigint) as delayed_15_{{ days }}d,
        cast(sum(sum_arr_delay) over w{{ days }} as bigint) as sum_arr_delay_{{ days }}d,
        cast(sum(n_known_dep_delay) over w{{ days }} as bigint) as known_dep_delay_{{ days }}d,
        cast(sum(sum_dep_delay) over w{{ days }} as bigint) as sum_dep_delay_{{ days }}d,
        {%- endfor %}
        max(case when n_flights > 0 then as_of_date end) over to_date as last_flight_date

    from daily
    window
        {%- for days in windows %}
        w{{ days }} as (
            partition by {{ entity }} order by as_of_date
            rows between {{ days - 1 }} preceding and current row
        ),
        {%- endfor %}
        to_date as (
            partition by {{ entity }} order by as_of_date
            rows between unbounded preceding and current row
        )

),

final as (

    select
        {{ entity }},
        as_of_date,
        {%- for days in windows %}
        flights_{{ days }}d,
        cancelled_{{ days }}d,
        known_outcome_{{ days }}d,
        delayed_15_{{ days }}d,
        delayed_15_{{ days }}d / nullif(known_outcome_{{ days }}d, 0) as delay_rate_{{ days }}d,
        sum_arr_delay_{{ days }}d / nullif(known_outcome_{{ days }}d, 0) as mean_arr_delay_{{ days }}d,
        cancelled_{{ days }}d / nullif(flights_{{ days }}d, 0) as cancel_rate_{{ days }}d,
        sum_dep_delay_{{ days }}d / nullif(known_dep_delay_{{ days }}d, 0) as mean_dep_delay_{{ days }}d,
        {%- endfor %}
        last_flight_date,
        as_of_date - last_flight_date as days_since_last_flight

    from windowed

)

select * from final
where days_since_last_flight <= {{ tail_days }}
    and {{ features_since_filter('as_of_date') }}

{% endmacro %}
