"""The serving and online-write benchmarks' setting: the shipped feature repository applied in a temporary folder
(its wide SQLite online store there too), and a day of synthetic predictions of the shipped ``flight_delay`` spec
in the stored rows' schema, keyed like flights (``2013-01-08_UA_0001_EWR``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

SPEC = "flight_delay"


def apply_in(base: Path) -> dict[str, str]:
    """Point the platform's Feast settings at ``base``, apply the repository; returns the variables set (for
    child processes: ``batch-platform serve`` / ``predict``)."""
    from batch_platform import settings
    from batch_platform.lib.feature_store import FeatureStoreClient
    from batch_platform.lib.specs import SPECS_DIR_VAR

    (base / "features").mkdir(parents=True, exist_ok=True)
    env = {settings.FEATURES_VAR: str(base / "features"),
           settings.PREDICTIONS_EXPORT_VAR: str(base / "predictions_export"),
           settings.FEAST_REGISTRY_VAR: str(base / "feast" / "registry.db"),
           settings.ONLINE_STORE_VAR: str(base / "feast" / "online_store.db")}
    os.environ.update(env)
    for var in (SPECS_DIR_VAR, settings.REDIS_VAR):  # the shipped specs, the default (SQLite) store
        os.environ.pop(var, None)
    FeatureStoreClient().apply()
    return env


def keys(n: int) -> list[str]:
    carriers, origins = ["UA", "B6", "EV", "DL", "AA", "MQ"], ["EWR", "JFK", "LGA"]
    return [f"2013-01-08_{carriers[i % 6]}_{i:05d}_{origins[i % 3]}" for i in range(n)]


def prediction_rows(keys: list[str], scored_at: pd.Timestamp, *, seed: int = 0, version: int = 3) -> pd.DataFrame:
    """Stored prediction rows (the tests' synthetic rows, ``tests/prediction_rows.py``)."""
    from tests.prediction_rows import prediction_rows as rows

    return rows(keys, scored_at, version=version, seed=seed)
