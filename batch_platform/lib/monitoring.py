"""Monitoring logic without Dagster: production accuracy once labels are final, and the retraining rule.

**Production accuracy** (:func:`production_accuracy`): the stored predictions of flight day D joined with the
outcomes of D from the spec's label model, only once D's labels are final (the spec's embargo, measured against
the data clock: when the newest loaded flight day's batch landed). Computed per model version and compared with the
version's **test-window** metric (from the registry: measured on days after its validation window, which early
stopping and the search already optimised, so validation is optimistic). One day of ~900 flights is too noisy to
judge (~20 positives for cancellations): the verdict is on the last ``monitoring.retrain.window_partitions`` days
with final labels the version served, with a **day-block bootstrap interval** (:func:`window_accuracy`: whole days
resampled, as the gate does): the check fails when the interval's *upper* end lies more than
``monitoring.accuracy_tolerance`` below the test-window metric -- production is worse beyond what day-to-day
variation explains. Rows that got the cold-start fallback are measured separately (``fallback_*``) and left out of
the model's metric; the **served** metric covers model and fallback rows together (what callers got). Results are
kept in ``monitoring.production_accuracy`` (one row per spec, day and model version; a day's rows replaced in one
transaction).

**Retraining rule** (:func:`retrain_decision`): over the last ``retrain.window_partitions`` scored days of the
*current* champion, retrain when at least ``drift_error_partitions`` had ERROR drift or ``accuracy_failures``
failed the accuracy check, or when the champion is older than ``max_model_age_days``. A request is suppressed while
a retrain of the spec is in progress, within ``cooldown_hours`` of the previous one, or while a challenger is in
shadow (a retrain would replace it and restart its shadow days). The run key is
``retrain:<spec>:v<champion>:<episode>``, where the episode counts earlier retrain runs for that champion, so the
same evidence always yields the same key (a restarted daemon cannot launch it twice) and a new key only exists once
a cooldown has passed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import numpy as np

from batch_platform.lib import evaluation, performance_estimate, scoring
from batch_platform.lib.gate import HIGHER_IS_BETTER
from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import LABEL_SCHEMA

SCHEMA = "monitoring"
ACCURACY_TABLE = f"{SCHEMA}.production_accuracy"


class LabelsNotFinal(RuntimeError):
    """The day's labels are still inside the spec's embargo at the data clock."""


class NoPredictions(LookupError):
    """The day was never scored."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class VersionAccuracy:
    model_version: int
    rows: int
    positives: int | None  # None for a regression metric
    metric: float | None  # production value of the spec's gate metric on the day (None: one class only)
    validation_metric: float | None  # the reference: the version's test-window metric (the name is historical)
    degradation: float | None  # reference - production on the day (higher-is-better metrics), for information
    passed: bool  # the window's verdict (see window_accuracy)
    fallback_rows: int
    fallback_metric: float | None
    metrics: dict = field(default_factory=dict)
    served_metric: float | None = None  # model and fallback rows together: the quality callers were served
    window: dict | None = None  # the rolling-window verdict (window_accuracy)
    estimated_metric: float | None = None  # what the scores alone predicted before the labels (performance_estimate)
    estimate_low: float | None = None
    estimate_high: float | None = None

    @property
    def estimate_gap(self) -> float | None:
        """Realised minus estimated: how far the day fell from what its scores predicted."""
        return None if self.metric is None or self.estimated_metric is None else self.metric - self.estimated_metric


@dataclass
class AccuracyResult:
    spec: str
    partition: dt.date
    metric: str
    tolerance: float
    labels_final_at: dt.datetime
    by_version: list[VersionAccuracy]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.by_version)

    def describe(self) -> str:
        parts = []
        for v in self.by_version:
            m = "n/a" if v.metric is None else f"{v.metric:.3f}"
            val = "n/a" if v.validation_metric is None else f"{v.validation_metric:.3f}"
            w = v.window or {}
            window = ("" if not w.get("days") else
                      f"; {len(w['days'])}-day window {w['metric']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]")
            parts.append(f"v{v.model_version}: production {self.metric} {m} vs test window {val} on {v.rows} rows"
                         + window + ("" if v.passed else f" (worse by more than {self.tolerance} beyond its "
                                                         "interval)"))
        return "; ".join(parts)


def data_clock(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """When the newest loaded batch was published: the 'now' of a replayed data set (see
    :func:`batch_platform.lib.warehouse.newest_publication`)."""
    from batch_platform.lib.warehouse import newest_publication

    return newest_publication(con)


def production_accuracy(con: duckdb.DuckDBPyConnection, spec: ModelSpec, day: dt.date,
                        reference_metrics: dict[int, float | None], *, now: dt.datetime | None = None,
                        calibrations: dict[int, performance_estimate.CalibrationMap | None] | None = None
                        ) -> AccuracyResult:
    """Metrics of the stored predictions of ``day`` against its final labels (see the module docstring), each
    version's beside the estimate its scores alone give (``calibrations``: each version's frozen map; a version
    without one gets no estimate)."""
    final_at = spec.label_final_at(day)
    now = now or data_clock(con)
    if now is None or now < final_at:
        raise LabelsNotFinal(f"{spec.name}: labels of {day} are final at {final_at.isoformat()}; the data clock is "
                             f"{now.isoformat() if now else 'empty'}")
    table = scoring.table_name(spec)
    key = _q(spec.entity.key)
    try:
        rows = con.sql(
            f"SELECT p.model_version, p.score, p.fallback_reason IS NOT NULL AS fallback, "
            f"CAST({spec.label.sql} AS {spec.label_sql_type}) AS y "
            f"FROM {table} p JOIN {LABEL_SCHEMA}.{spec.label.model} l ON l.{key} = p.{key} "
            f"WHERE p.{scoring.PARTITION} = DATE '{day}' AND ({spec.label.sql}) IS NOT NULL"
        ).df()
    except duckdb.CatalogException as e:
        raise NoPredictions(f"{spec.name}: no prediction table yet ({e})") from None
    if rows.empty:
        raise NoPredictions(f"{spec.name}: no labelled predictions for {day} in {table}")
    metric, tolerance = spec.gate.metric, spec.monitoring.accuracy_tolerance
    higher = HIGHER_IS_BETTER[metric]
    out = []
    for version, g in rows.groupby("model_version", sort=True):
        model = g[~g["fallback"]]
        fb = g[g["fallback"]]
        regression = spec.is_regression
        m = _metrics(model["y"].to_numpy(), model["score"].to_numpy(), regression)
        value = m.get(metric)
        calibration = (calibrations or {}).get(int(version))
        est = None
        if calibration is not None and len(model):
            est = performance_estimate.estimate(model["score"].to_numpy(), calibration, metrics=(metric,),
                                                draws=300, seed=0).metrics[metric]
        val = reference_metrics.get(int(version))
        degradation = None
        if value is not None and val is not None:
            degradation = (val - value) if higher else (value - val)
        window = window_accuracy(con, spec, int(version), day, now=now)
        passed = True
        if val is not None and window.get("days"):
            passed = (window["ci_high"] >= val - tolerance) if higher else (window["ci_low"] <= val + tolerance)
        out.append(VersionAccuracy(
            model_version=int(version), rows=int(len(model)),
            positives=None if regression else int(model["y"].sum()), metric=value,
            validation_metric=val, degradation=degradation, passed=passed,
            fallback_rows=int(len(fb)),
            fallback_metric=_metrics(fb["y"].to_numpy(), fb["score"].to_numpy(), regression).get(metric), metrics=m,
            served_metric=_metrics(g["y"].to_numpy(), g["score"].to_numpy(), regression).get(metric), window=window,
            estimated_metric=est.expected if est else None, estimate_low=est.low if est else None,
            estimate_high=est.high if est else None,
        ))
    return AccuracyResult(spec.name, day, metric, tolerance, final_at, out)


def window_accuracy(con: duckdb.DuckDBPyConnection, spec: ModelSpec, version: int, day: dt.date, *,
                    now: dt.datetime | None = None, n_bootstrap: int = 1000, confidence: float = 0.95) -> dict:
    """The gate metric of ``version`` over its model-scored rows of the last ``retrain.window_partitions`` days up
    to ``day`` with final labels, with a day-block bootstrap interval (``lib/gate.py``); ``{}`` when those rows
    hold a single class, ``days`` empty when fewer than two days (no interval from one day)."""
    from batch_platform.lib import gate, promotion, shadow

    now = now or data_clock(con)
    if now is None:
        return {"days": [], "rows": 0}
    last = min(day, spec.last_final_day(now))
    first = last - dt.timedelta(days=spec.monitoring.retrain.window_partitions - 1)
    rows = shadow.served_rows(con, spec, version=version, first_day=first, now=now, last_day=day)
    days = sorted({str(d) for d in rows[promotion.DAY]})
    if len(days) < 2 or (not spec.is_regression and rows[promotion.LABEL].nunique() < 2):
        return {"days": [], "rows": int(len(rows))}
    value, low, high = gate.bootstrap_metric(spec.gate.metric, rows[promotion.LABEL].to_numpy(),
                                             rows[promotion.CHAMPION_SCORE].to_numpy(), n=n_bootstrap,
                                             confidence=confidence, blocks=rows[promotion.DAY].astype(str).to_numpy())
    return {"days": days, "rows": int(len(rows)), "metric": value, "ci_low": low, "ci_high": high}


def _metrics(y: np.ndarray, p: np.ndarray, regression: bool = False) -> dict:
    if len(y) == 0 or (not regression and len(np.unique(y)) < 2):
        return {"rows": int(len(y))}
    return evaluation.metrics(y, p, regression=regression)


def store_accuracy(con: duckdb.DuckDBPyConnection, result: AccuracyResult, run_id: str) -> None:
    """Replace the day's rows of ``monitoring.production_accuracy`` for the spec in one transaction."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {ACCURACY_TABLE} (spec VARCHAR NOT NULL, partition_date DATE NOT NULL, "
                "model_version BIGINT NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, validation_value DOUBLE, "
                "degradation DOUBLE, passed BOOLEAN NOT NULL, rows BIGINT NOT NULL, positives BIGINT, "
                "fallback_rows BIGINT NOT NULL, run_id VARCHAR NOT NULL, computed_at TIMESTAMPTZ NOT NULL)")
    for column in ("estimated_value", "estimate_gap"):  # added with the performance estimate
        con.execute(f"ALTER TABLE {ACCURACY_TABLE} ADD COLUMN IF NOT EXISTS {column} DOUBLE")
    # positives is NULL for a regression metric (tables made before regression specs declared it NOT NULL)
    con.execute(f"ALTER TABLE {ACCURACY_TABLE} ALTER COLUMN positives DROP NOT NULL")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {ACCURACY_TABLE} WHERE spec = ? AND partition_date = ?",
                    [result.spec, result.partition])
        now = dt.datetime.now(dt.UTC)
        for v in result.by_version:
            con.execute(f"INSERT INTO {ACCURACY_TABLE} (spec, partition_date, model_version, metric, value, "
                        "validation_value, degradation, passed, rows, positives, fallback_rows, run_id, computed_at, "
                        "estimated_value, estimate_gap) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [result.spec, result.partition, v.model_version, result.metric, v.metric,
                         v.validation_metric, v.degradation, v.passed, v.rows, v.positives, v.fallback_rows,
                         run_id, now, v.estimated_metric, v.estimate_gap])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ----------------------------------------------------------------------------------------------------------------
# The retraining rule
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionEvidence:
    partition: str
    model_version: int
    drift_error: bool | None = None  # None: no drift evaluation for this partition
    accuracy_failed: bool | None = None


@dataclass(frozen=True)
class RetrainDecision:
    spec: str
    request: bool
    reason: str  # why requested, or why not / suppressed
    rule: str | None  # drift | accuracy | model_age (when the rule holds, even if suppressed)
    run_key: str | None
    champion_version: int | None
    partitions: tuple[str, ...] = ()
    suppressed: bool = False


def retrain_decision(spec: ModelSpec, champion_version: int | None, champion_created_at: dt.datetime | None,
                     evidence: list[PartitionEvidence], *, previous_retrains: list[dt.datetime],
                     retrain_in_progress: bool, now: dt.datetime,
                     evidence_after: str | None = None, challenger_version: int | None = None) -> RetrainDecision:
    """Apply the spec's rule to the latest evidence of the current champion (see the module docstring).
    ``evidence_after``: the newest day an earlier retrain request of this champion was based on; a new request
    needs the rule to hold on later days (one request per episode, also when that retrain failed its gate).
    ``challenger_version``: a challenger in shadow or canary answers the evidence already; a retrain now would
    replace it and restart its shadow days, so none is requested until it is promoted or withdrawn."""
    r = spec.monitoring.retrain
    if champion_version is None:
        return RetrainDecision(spec.name, False, "no champion yet", None, None, None)
    mine = sorted((e for e in evidence if e.model_version == champion_version), key=lambda e: e.partition)
    window = mine[-r.window_partitions:]
    drift_errors = [e.partition for e in window if e.drift_error]
    accuracy_failures = [e.partition for e in window if e.accuracy_failed]
    rule = why = None
    if len(drift_errors) >= r.drift_error_partitions:
        rule, why = "drift", (f"ERROR drift in {len(drift_errors)} of the last {len(window)} scored days "
                              f"({', '.join(drift_errors)}) of champion v{champion_version}")
    elif len(accuracy_failures) >= r.accuracy_failures:
        rule, why = "accuracy", (f"production accuracy below tolerance on {len(accuracy_failures)} of the last "
                                 f"{len(window)} days ({', '.join(accuracy_failures)})")
    elif champion_created_at is not None and now - champion_created_at > dt.timedelta(
            days=spec.monitoring.max_model_age_days):
        rule, why = "model_age", (f"champion v{champion_version} is older than "
                                  f"{spec.monitoring.max_model_age_days} days")
    partitions = tuple(e.partition for e in window)
    if rule is None:
        return RetrainDecision(spec.name, False, f"no rule holds for v{champion_version}: {len(drift_errors)} ERROR "
                               f"drift and {len(accuracy_failures)} accuracy failure(s) in the last {len(window)} "
                               "scored days", None, None, champion_version, partitions)
    if retrain_in_progress:
        return RetrainDecision(spec.name, False, f"suppressed: a retrain of {spec.name} is in progress ({why})", rule,
                               None, champion_version, partitions, suppressed=True)
    if challenger_version is not None and challenger_version != champion_version:
        return RetrainDecision(spec.name, False, f"suppressed: challenger v{challenger_version} is in shadow against "
                               f"v{champion_version} ({why})", rule, None, champion_version, partitions, suppressed=True)
    cooldown = dt.timedelta(hours=r.cooldown_hours)
    if previous_retrains and now - max(previous_retrains) < cooldown:
        return RetrainDecision(spec.name, False, f"suppressed: cooldown, last retrain requested "
                               f"{max(previous_retrains).isoformat()} ({why})", rule, None, champion_version,
                               partitions, suppressed=True)
    if evidence_after is not None and rule in ("drift", "accuracy"):
        days, needed = ((drift_errors, r.drift_error_partitions) if rule == "drift"
                        else (accuracy_failures, r.accuracy_failures))
        if len([d for d in days if d > evidence_after]) < needed:
            return RetrainDecision(spec.name, False, f"suppressed: no new evidence since the last retrain request "
                                   f"(based on days through {evidence_after}; {why})", rule, None, champion_version,
                                   partitions, suppressed=True)
    run_key = f"retrain:{spec.name}:v{champion_version}:{len(previous_retrains) + 1}"
    return RetrainDecision(spec.name, True, why, rule, run_key, champion_version, partitions)
