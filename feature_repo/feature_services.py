"""Feature services: the versioned feature sets models are trained and scored with.

A service is immutable once a model depends on it: change the set by adding ``_v2``, not by editing ``_v1``.

- ``flight_delay_v1``: every feature of every view.
- ``flight_cancellation_v1``: the same minus ``route_mean_arr_delay_28d`` (a mean over arrived flights only,
  i.e. it says nothing about cancellations and is undefined for routes with mostly cancelled flights); the
  route's cancellation and delay rates stay.
"""

from feast import FeatureService

# Sibling module: `feast apply` (and batch_platform.lib.feature_store) put this folder on sys.path.
from feature_views import (
    carrier_daily_features,
    origin_weather_features,
    plane_attributes,
    plane_daily_features,
    route_daily_features,
)

flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    features=[
        plane_daily_features,
        route_daily_features,
        carrier_daily_features,
        origin_weather_features,
        plane_attributes,
    ],
    description="Features of the arrival-delay model (arrival > 15 min late), one row per scheduled flight.",
)

flight_cancellation_v1 = FeatureService(
    name="flight_cancellation_v1",
    features=[
        plane_daily_features,
        route_daily_features[
            [f.name for f in route_daily_features.features if f.name != "route_mean_arr_delay_28d"]
        ],
        carrier_daily_features,
        origin_weather_features,
        plane_attributes,
    ],
    description="Features of the cancellation model: flight_delay_v1 without route_mean_arr_delay_28d.",
)
