"""Partition definitions shared by every stage."""

import datetime as dt

import dagster as dg

from batch_platform import settings

# One partition per flight day (local New York date), over the whole data set.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.DATASET_START.isoformat(),
    end_date=(settings.DATASET_END + dt.timedelta(days=1)).isoformat(),
    timezone=settings.DATASET_TIMEZONE,
)
