"""Partition definitions shared by every stage, derived from the data dir's clock (settings.data_clock()).

One partition per flight day (local date in the time model's zone), from the first day of data on:
- 2013 replay clock: through the data set's last day (a finished data set has a fixed end);
- live clock: no fixed end; the partitions reach tomorrow, the day scored this evening (its schedule is published
  this morning). Raw batches of a day exist only once published (the next morning), so the newest raw partitions
  are empty until then.
"""

import datetime as dt

import dagster as dg

from batch_platform import settings
from batch_platform.lib.clock import DataClock
from batch_platform.lib.time_model import load_time_model

LIVE_END_OFFSET = 2
"""Live clock: partitions through tomorrow (end_offset 1 would stop at today)."""


def daily_partitions_for(clock: DataClock) -> dg.DailyPartitionsDefinition:
    timezone = load_time_model().spec.timezone
    if clock.fixed_end is not None:
        return dg.DailyPartitionsDefinition(
            start_date=clock.first_day.isoformat(),
            end_date=(clock.fixed_end + dt.timedelta(days=1)).isoformat(),
            timezone=timezone,
        )
    return dg.DailyPartitionsDefinition(
        start_date=clock.first_day.isoformat(), end_offset=LIVE_END_OFFSET, timezone=timezone
    )


daily_partitions = daily_partitions_for(settings.data_clock())
