{{ config(materialized='table') }}

-- One row per flight scheduled on a flight day, loaded from the schedule published the day before (D-1 06:00
-- New York): the frame a model scores the evening before D, when D's flights have not happened yet. The same
-- columns and values as flight_labels (one macro computes both), without the outcomes.

{{ scheduled_flight_frame('stg_flight_schedule') }}
