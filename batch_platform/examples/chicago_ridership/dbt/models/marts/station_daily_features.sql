-- Daily station features for Feast (entity station): one row per station and as_of_date, from the entries batches
-- of the 28 days ending at as_of_date, valid once the newest of them is published (D+1 06:00 Chicago): the evening
-- before day D a model sees the station's history up to D-2.

with

windows as (

    select * from {{ ref('int_station_daily_windows') }}

),

validity as (

    {{ feed_validity('station_entries', 'published', lookback_days=28) }}

),

final as (

    select
        windows.station,
        windows.as_of_date,
        validity.valid_from as feature_ts,
        validity.valid_from as station_valid_from,
        windows.station_entries_1d,
        windows.station_mean_7d,
        windows.station_mean_28d,
        windows.station_days_28d,
        {%- for dow in range(1, 8) %}
        windows.station_mean_dow{{ dow }}_28d,
        {%- endfor %}
        windows.station_std_28d

    from windows
    inner join validity on validity.batch_date = windows.as_of_date

)

select * from final
-- by day first: a point-in-time join reads only the parquet row groups of the days it needs
order by as_of_date, station
