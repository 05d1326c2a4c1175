{{ config(materialized='table') }}

-- One row per scheduled flight: the entity and label frame for the models. Carries the Feast join keys
-- (tailnum, route, carrier, origin), calendar features known well in advance, and the outcomes. The columns
-- before the outcomes are flight_schedule's, computed by the same macro.

{{ scheduled_flight_frame('stg_flights', extra_columns=['arr_delay', 'is_delayed_15', 'is_cancelled', 'is_diverted']) }}
