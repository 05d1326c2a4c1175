-- One row per calendar day between the first and the last holiday of the seed (inside that range the nearest
-- holiday is always known), with the calendar attributes used as features known in advance (the platform's macro,
-- batch_platform/dbt_macros/calendar.sql).

{{ calendar_days(ref('us_federal_holidays')) }}
