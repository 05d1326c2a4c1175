"""Serving predictions by key: push a scored day into the online store, look one key up.

Predictions reach the online store through each spec's push-fed Feast view ``<spec>_predictions``
(built per spec by ``batch_platform/lib/feast_declarations.py``); its TTL (``scoring.online_ttl_hours``, about 1.5 batch intervals) decides
how long a prediction is served after it was scored. :func:`lookup` returns the prediction with its model version
and age, or a :class:`NoPrediction` that says why there is none (never scored / not pushed, or expired).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from batch_platform.lib import scoring
from batch_platform.lib.specs import ModelSpec

FIELDS = ("score", "decision", "model_version", "model_sha256", "alias", "run_id", "partition_date",
          "fallback_reason", "scored_at")
PUSH_ROWS = 20_000  # rows per push call (bounded memory; SQLite writes a row per key and feature, Redis a hash per key)


def view_name(spec: ModelSpec) -> str:
    return f"{spec.name}_predictions"


def push_source_name(spec: ModelSpec) -> str:
    return f"{spec.name}_predictions_push"


@dataclass(frozen=True)
class Prediction:
    spec: str
    key: str
    score: float
    decision: bool | None
    model_version: int
    model_sha256: str
    alias: str
    run_id: str
    partition_date: str
    fallback_reason: str | None
    scored_at: dt.datetime
    age: dt.timedelta
    ttl: dt.timedelta

    found = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(found=True, scored_at=self.scored_at.isoformat(), age_seconds=round(self.age.total_seconds(), 1),
                 ttl_seconds=self.ttl.total_seconds())
        del d["age"], d["ttl"]
        return d


@dataclass(frozen=True)
class NoPrediction:
    spec: str
    key: str
    reason: str

    found = False

    def to_dict(self) -> dict[str, Any]:
        return {"found": False, **asdict(self)}


def push_frame(spec: ModelSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """Stored prediction rows -> the push source's frame (key, event timestamp, the view's fields)."""
    out = pd.DataFrame({
        spec.entity.key: rows[spec.entity.key].astype(str),
        "event_timestamp": pd.to_datetime(rows["scored_at"], utc=True),
        "score": rows["score"].astype("float64"),
        "decision": rows["decision"].map(lambda v: None if pd.isna(v) else int(bool(v))).astype("Int64"),
        "model_version": rows["model_version"].astype("int64"),
        "model_sha256": rows["model_sha256"].astype(str),
        "alias": rows["alias"].astype(str),
        "run_id": rows["run_id"].astype(str),
        "partition_date": pd.to_datetime(rows[scoring.PARTITION]).dt.strftime("%Y-%m-%d"),
        "fallback_reason": rows["fallback_reason"].fillna("").astype(str),
        "scored_at": pd.to_datetime(rows["scored_at"], utc=True),
    })
    return out


def push_partition(con, feature_store, spec: ModelSpec, day: dt.date, *, batch_rows: int = PUSH_ROWS) -> int:
    """Push the stored (committed) predictions of ``day`` to the online store; returns the rows pushed."""
    pushed = 0
    for rows in scoring.iter_partition(con, spec, day, batch_rows=batch_rows):
        pushed += feature_store.push(push_source_name(spec), push_frame(spec, rows))
    return pushed


def lookup(feature_store, spec: ModelSpec, key: str, *, now: dt.datetime | None = None) -> Prediction | NoPrediction:
    """The latest served prediction of ``key`` for ``spec``, or why there is none."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    view = view_name(spec)
    refs = [f"{view}:{f}" for f in FIELDS]
    (row,) = feature_store.online_features(refs, [{spec.entity.key: key}])
    if row.get("score") is None:
        return NoPrediction(spec.name, key, f"no prediction for {spec.entity.key}={key!r}: it was never scored "
                            "and pushed (unknown key, or its day has not been scored yet)")
    ttl = feature_store.view_ttl(view) or dt.timedelta(0)
    scored_at = _as_utc(row["scored_at"])
    age = now - scored_at
    if ttl and age > ttl:
        return NoPrediction(spec.name, key, f"prediction expired: scored {scored_at.isoformat()} "
                            f"({_human(age)} ago) by v{row['model_version']}, served for {_human(ttl)} "
                            "(the day's scoring has not run since)")
    decision = row.get("decision")
    return Prediction(
        spec=spec.name, key=key, score=float(row["score"]), decision=None if decision is None else bool(decision),
        model_version=int(row["model_version"]), model_sha256=row["model_sha256"], alias=row["alias"],
        run_id=row["run_id"], partition_date=row["partition_date"], fallback_reason=row["fallback_reason"] or None,
        scored_at=scored_at, age=age, ttl=ttl,
    )


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _human(delta: dt.timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
