"""Shared fixtures: every test gets its own data dir, warehouse and Dagster instance under ``tmp_path``."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest

from batch_platform import settings
from batch_platform.lib.landing import replay

FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 1, 4)


@pytest.fixture(scope="session")
def landed_days(tmp_path_factory) -> Path:
    """One replay of a few real days (plus reference snapshots), shared read-only; copy before mutating."""
    landing = tmp_path_factory.mktemp("landing-template")
    replay(landing, FIRST_DAY, LAST_DAY)
    return landing


@pytest.fixture
def platform_env(tmp_path, monkeypatch, landed_days) -> dict[str, Path]:
    """Point every setting at ``tmp_path`` and give the test its own copy of the landed days."""
    data = tmp_path / "data"
    landing = data / "landing"
    shutil.copytree(landed_days, landing)
    env = {
        settings.DATA_DIR_VAR: data,
        settings.WAREHOUSE_VAR: data / "warehouse.duckdb",
        settings.LANDING_VAR: landing,
        settings.QUARANTINE_VAR: data / "quarantine",
        settings.FEATURES_VAR: data / "features",
        settings.FEAST_REGISTRY_VAR: data / "feast" / "registry.db",
        settings.ONLINE_STORE_VAR: data / "feast" / "online_store.db",
        settings.ARTIFACTS_VAR: data / "artifacts",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(settings.DEFAULT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return {
        "data": data,
        "warehouse": data / "warehouse.duckdb",
        "landing": landing,
        "quarantine": data / "quarantine",
        "dagster_home": home,
    }


@pytest.fixture
def defs(platform_env) -> dg.Definitions:
    from batch_platform.definitions import defs as lazy_defs

    return lazy_defs()
