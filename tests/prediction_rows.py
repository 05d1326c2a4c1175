"""Synthetic stored prediction rows (what ``scoring.iter_partition`` yields), for the online-store tests and
benchmarks: a score, a decision (some NULL), the model's identity, a fallback reason on some rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd


def prediction_rows(keys: list[str], scored_at: pd.Timestamp, *, version: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(keys)
    return pd.DataFrame({
        "flight_id": keys,
        "scored_at": [scored_at] * n,
        "score": rng.random(n),
        "decision": [None if i % 7 == 0 else bool(i % 2) for i in range(n)],
        "model_version": [version] * n,
        "model_sha256": [f"{version:064x}"] * n,
        "alias": ["champion"] * n,
        "run_id": [f"run-{version}"] * n,
        "partition_date": [dt.date(2013, 1, 8)] * n,
        "fallback_reason": [("missing_features:plane_daily_features" if i % 5 == 0 else None) for i in range(n)],
    })
