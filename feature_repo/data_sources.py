"""Batch sources: the parquet feature tables dbt writes to ``$BATCH_PLATFORM_FEATURES_DIR/<table>.parquet``.

The path is made absolute when this module is imported (``feast apply`` imports it) and stored in the registry. It
is not resolved: the features folder is a link to the published feature generation (see
``batch_platform/lib/feature_generations.py``), and Feast must follow the link at read time, not pin a generation. ``feature_ts`` is the instant from which a row is valid: Feast's point-in-time join takes, per entity
key, the latest row with ``feature_ts <= event_timestamp``. Timestamps in the files must be microsecond precision.
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

FEATURES_DIR_VAR = "BATCH_PLATFORM_FEATURES_DIR"

if not os.environ.get(FEATURES_DIR_VAR):
    raise RuntimeError(
        f"{FEATURES_DIR_VAR} is not set: it names the folder of parquet feature tables the sources point at "
        "(defaults: batch_platform.settings.export_defaults())"
    )
FEATURES_DIR = Path(os.path.abspath(os.path.expanduser(os.environ[FEATURES_DIR_VAR])))


def _feature_table(table: str, description: str) -> FileSource:
    return FileSource(
        name=table,
        path=str(FEATURES_DIR / f"{table}.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="feature_ts",
        description=description,
    )


plane_daily_source = _feature_table(
    "plane_daily_features", "Per aircraft and day: trailing 7/28-day activity and delay statistics."
)
route_daily_source = _feature_table(
    "route_daily_features", "Per route and day: trailing 7/28-day volume, delay and cancellation statistics."
)
carrier_daily_source = _feature_table(
    "carrier_daily_features", "Per carrier and day: trailing 7/28-day delay and cancellation statistics."
)
origin_weather_source = _feature_table(
    "origin_weather_features", "Per origin airport and day: the last observation plus 24-hour aggregates."
)
plane_attributes_source = _feature_table(
    "plane_attributes", "Per aircraft: static attributes from the planes reference table."
)
