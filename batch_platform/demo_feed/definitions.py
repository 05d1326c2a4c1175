"""A second code location for the live demo: the upstream data provider, played by a sensor.

It is not part of the platform (whose code location is ``batch_platform.definitions``): it stands in for the
systems that export daily batches into the landing zone. On the live clock it runs by default and, every minute,
lands what the time model says is published by now (:func:`batch_platform.lib.feed.publish_due`): on its first tick
the history, then each morning at 06:00 New York yesterday's flights and weather and tomorrow's schedule. The
platform's ``landing_arrivals`` sensor loads them; its automation does the rest.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
from dagster._time import get_current_datetime

from batch_platform import settings
from batch_platform.lib import feed
from batch_platform.lib.time_model import load_time_model

FEED_SENSOR = "live_replay_feed"
HISTORY_DAYS_VAR = "BATCH_PLATFORM_FEED_HISTORY_DAYS"


def _status() -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if settings.data_clock().is_live else dg.DefaultSensorStatus.STOPPED


@dg.sensor(
    name=FEED_SENSOR,
    minimum_interval_seconds=60,
    default_status=_status(),
    description="Plays the upstream on the live clock: lands into the landing zone every batch published by now "
    "(flights and weather of D at D+1 06:00 New York, the schedule of D at D-1 06:00), starting with "
    f"${HISTORY_DAYS_VAR} (default {feed.DEFAULT_HISTORY_DAYS}) days of history. Cursor: the newest flight day "
    "landed. Requests no runs: the platform's arrival sensor loads what lands.",
)
def live_replay_feed(context: dg.SensorEvaluationContext):
    settings.export_defaults()
    clock = settings.data_clock()
    if not clock.is_live:
        return dg.SkipReason(f"the data dir {settings.data_dir()} is on {clock.label}: nothing is published live")
    landed = dt.date.fromisoformat(context.cursor) if context.cursor else None
    result = feed.publish_due(settings.landing_dir(), clock, get_current_datetime(), load_time_model(),
                              landed_through=landed,
                              history_days=int(os.environ.get(HISTORY_DAYS_VAR) or feed.DEFAULT_HISTORY_DAYS))
    context.log.info(result.describe())
    cursor = result.landed_through.isoformat() if result.landed_through else None
    return dg.SensorResult(skip_reason=result.describe(), cursor=cursor)


defs = dg.Definitions(sensors=[live_replay_feed])
