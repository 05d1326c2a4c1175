"""Feature views over the dbt feature tables (one view per table, same name as the table).

The column lists below are the one place to edit when a feature table's columns change. Types follow the
parquet written by dbt: BIGINT -> Int64, DOUBLE -> Float64, VARCHAR -> String, TIMESTAMPTZ -> UnixTimestamp.
Each table also has ``feature_ts`` (the instant from which the row is valid; the sources' timestamp_field) and
the entity column; ``as_of_date`` / ``obs_ts`` stay in the files but are not served.

TTL semantics (feast 0.67, offline point-in-time join): a row with ``feature_ts`` is returned for an event at
``t`` iff ``feature_ts <= t <= feature_ts + ttl`` (both ends inclusive); ``ttl=timedelta(0)`` means no expiry.
The online store does not apply TTLs on read.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String, UnixTimestamp

# Sibling modules: `feast apply` (and batch_platform.lib.feature_store) put this folder on sys.path.
from data_sources import (
    carrier_daily_source,
    origin_weather_source,
    plane_attributes_source,
    plane_daily_source,
    route_daily_source,
)
from entities import carrier, origin, route, tailnum

# ---------------------------------------------------------------------------------------------------------------
# Feature table columns (served features), one list per table.
# ---------------------------------------------------------------------------------------------------------------
PLANE_DAILY_FEATURES = [
    Field(name="plane_valid_from", dtype=UnixTimestamp),
    Field(name="plane_flights_7d", dtype=Int64),
    Field(name="plane_flights_28d", dtype=Int64),
    Field(name="plane_delay_rate_7d", dtype=Float64),
    Field(name="plane_delay_rate_28d", dtype=Float64),
    Field(name="plane_mean_arr_delay_7d", dtype=Float64),
    Field(name="plane_mean_arr_delay_28d", dtype=Float64),
    Field(name="plane_cancel_rate_28d", dtype=Float64),
    Field(name="plane_days_since_last_flight", dtype=Int64),
]

ROUTE_DAILY_FEATURES = [
    Field(name="route_valid_from", dtype=UnixTimestamp),
    Field(name="route_flights_7d", dtype=Int64),
    Field(name="route_flights_28d", dtype=Int64),
    Field(name="route_delay_rate_7d", dtype=Float64),
    Field(name="route_delay_rate_28d", dtype=Float64),
    Field(name="route_mean_arr_delay_28d", dtype=Float64),
    Field(name="route_cancel_rate_28d", dtype=Float64),
]

CARRIER_DAILY_FEATURES = [
    Field(name="carrier_valid_from", dtype=UnixTimestamp),
    Field(name="carrier_flights_7d", dtype=Int64),
    Field(name="carrier_delay_rate_7d", dtype=Float64),
    Field(name="carrier_delay_rate_28d", dtype=Float64),
    Field(name="carrier_cancel_rate_7d", dtype=Float64),
    Field(name="carrier_mean_dep_delay_7d", dtype=Float64),
]

ORIGIN_WEATHER_FEATURES = [
    Field(name="wx_valid_from", dtype=UnixTimestamp),
    Field(name="wx_temp", dtype=Float64),
    Field(name="wx_dewp", dtype=Float64),
    Field(name="wx_humid", dtype=Float64),
    Field(name="wx_wind_speed", dtype=Float64),
    Field(name="wx_wind_gust", dtype=Float64),
    Field(name="wx_precip", dtype=Float64),
    Field(name="wx_pressure", dtype=Float64),
    Field(name="wx_visib", dtype=Float64),
    Field(name="wx_precip_24h", dtype=Float64),
    Field(name="wx_max_wind_speed_24h", dtype=Float64),
    Field(name="wx_min_visib_24h", dtype=Float64),
    Field(name="wx_mean_temp_24h", dtype=Float64),
    Field(name="wx_obs_24h", dtype=Int64),
]

PLANE_ATTRIBUTE_FEATURES = [
    Field(name="plane_attr_valid_from", dtype=UnixTimestamp),
    Field(name="plane_year_built", dtype=Int64),
    Field(name="plane_seats", dtype=Int64),
    Field(name="plane_engines", dtype=Int64),
    Field(name="plane_engine_type", dtype=String),
    Field(name="plane_manufacturer", dtype=String),
    Field(name="plane_model", dtype=String),
]

# ---------------------------------------------------------------------------------------------------------------
# Views. Validity comes from the time model (batch_platform/time_model.yaml) through dbt: the entity tables get a
# row per key and day, valid once that day's flights batch is final (D+2 06:00 New York), so 3 days of TTL tolerate
# a missed day or two. Weather is a daily feed valid when published (D+1 06:00): at the 18:00 cutoff the newest row
# is 12 hours old, 36 hours when one batch is missing: 2 days of TTL (whole days: Feast's DuckDB join cannot add a
# mixed days-and-hours interval).
# ---------------------------------------------------------------------------------------------------------------
DAILY_TTL = timedelta(days=3)
WEATHER_TTL = timedelta(days=2)
NO_EXPIRY = timedelta(0)

plane_daily_features = FeatureView(
    name="plane_daily_features",
    entities=[tailnum],
    ttl=DAILY_TTL,
    schema=[Field(name="tailnum", dtype=String), *PLANE_DAILY_FEATURES],
    source=plane_daily_source,
    online=True,
    description="Trailing activity and delay statistics of the aircraft, as known at the start of the day.",
)

route_daily_features = FeatureView(
    name="route_daily_features",
    entities=[route],
    ttl=DAILY_TTL,
    schema=[Field(name="route", dtype=String), *ROUTE_DAILY_FEATURES],
    source=route_daily_source,
    online=True,
    description="Trailing volume, delay and cancellation statistics of the route.",
)

carrier_daily_features = FeatureView(
    name="carrier_daily_features",
    entities=[carrier],
    ttl=DAILY_TTL,
    schema=[Field(name="carrier", dtype=String), *CARRIER_DAILY_FEATURES],
    source=carrier_daily_source,
    online=True,
    description="Trailing delay and cancellation statistics of the carrier.",
)

origin_weather_features = FeatureView(
    name="origin_weather_features",
    entities=[origin],
    ttl=WEATHER_TTL,
    schema=[Field(name="origin", dtype=String), *ORIGIN_WEATHER_FEATURES],
    source=origin_weather_source,
    online=True,
    description="The origin airport's weather of the newest published day: its last observation and 24-hour "
    "aggregates.",
)

plane_attributes = FeatureView(
    name="plane_attributes",
    entities=[tailnum],
    ttl=NO_EXPIRY,
    schema=[Field(name="tailnum", dtype=String), *PLANE_ATTRIBUTE_FEATURES],
    source=plane_attributes_source,
    online=True,
    description="Static aircraft attributes (valid from when the registry snapshot was published, never expire).",
)
