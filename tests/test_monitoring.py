"""Monitoring logic (lib): production accuracy once labels are final, and the retraining rule with its episodes,
cooldown and suppression. The Dagster wiring runs end to end in test_loop.py."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from batch_platform.lib import monitoring, scoring, warehouse
from batch_platform.lib.monitoring import PartitionEvidence, retrain_decision
from batch_platform.lib.specs import DEFAULT_SPECS_DIR, load_spec

SPEC = load_spec(DEFAULT_SPECS_DIR / "flight_delay.yaml")
DAY = dt.date(2013, 3, 1)


def _warehouse(n: int = 600, *, flip: bool = False, seed: int = 0, days: int = 5) -> duckdb.DuckDBPyConnection:
    """Predictions of the ``days`` days ending at DAY by two versions (v1 on even rows, v2 on odd ones) and their
    outcomes; scores informative (AUC ≈ 0.8) unless ``flip``; a few fallback rows."""
    rng = np.random.default_rng(seed)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts; CREATE SCHEMA raw; CREATE SCHEMA predictions")
    con.execute("CREATE TABLE marts.flight_labels (flight_id VARCHAR, flight_date DATE, is_delayed_15 BOOLEAN)")
    con.execute(scoring._ddl(SPEC, scoring.table_name(SPEC)))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for back in range(days):
        day = DAY - dt.timedelta(days=back)
        y = rng.random(n) < 0.25
        score = np.clip(0.25 + 0.35 * (y - 0.25) + rng.normal(0, 0.2, n), 0.01, 0.99)
        if flip:
            score = 1 - score
        keys = [f"{day}-f{i}" for i in range(n)]
        rows = [(keys[i], day, bool(y[i])) for i in range(n)] + ([("cancelled", DAY, None)] if back == 0 else [])
        con.executemany("INSERT INTO marts.flight_labels VALUES (?, ?, ?)", rows)
        con.executemany(f"INSERT INTO {scoring.table_name(SPEC)} VALUES (?, ?, ?, NULL, NULL, ?, 'sha', 'champion', "
                        "'r', ?, ?, 'fp', ?)", [[day, keys[i], float(score[i]), 1 + i % 2, now, now,
                                                 "missing_features:x" if i % 50 == 0 else None] for i in range(n)])
    return con


def test_accuracy_waits_for_final_labels_then_compares_each_version_with_validation():
    con = _warehouse()
    final = SPEC.label_final_at(DAY)
    with pytest.raises(monitoring.LabelsNotFinal):
        monitoring.production_accuracy(con, SPEC, DAY, {1: 0.8, 2: 0.8}, now=final - dt.timedelta(minutes=1))
    _published(con, final)
    assert monitoring.data_clock(con) >= final  # the data clock alone decides
    result = monitoring.production_accuracy(con, SPEC, DAY, {1: 0.80, 2: 0.80})
    assert [v.model_version for v in result.by_version] == [1, 2]
    assert all(0.7 < v.metric < 0.99 for v in result.by_version) and result.passed, result.describe()
    assert sum(v.rows + v.fallback_rows for v in result.by_version) == 600  # the unlabelled flight is left out
    assert [v.fallback_rows for v in result.by_version] == [12, 0]  # every 50th row (all v1's), measured apart
    # a version whose test-window metric was much better than production degrades past the tolerance, beyond the
    # interval of its last 5 days; one bad day alone (a single-day window) decides nothing
    worse = monitoring.production_accuracy(con, SPEC, DAY, {1: 0.99, 2: 0.80})
    assert not worse.passed and [v.passed for v in worse.by_version] == [False, True]
    assert worse.by_version[0].degradation > SPEC.monitoring.accuracy_tolerance
    window = worse.by_version[0].window
    assert len(window["days"]) == 5 and window["ci_low"] < window["metric"] < window["ci_high"] < 0.99 - 0.05
    # the served quality counts the fallback rows too
    v1 = result.by_version[0]
    assert v1.served_metric is not None and v1.served_metric != v1.metric
    one_day = _warehouse(days=1)
    _published(one_day, final)
    assert monitoring.production_accuracy(one_day, SPEC, DAY, {1: 0.99, 2: 0.99}).passed


def test_accuracy_check_fails_on_a_broken_model_and_results_are_stored_idempotently():
    con = _warehouse(flip=True)
    _published(con, SPEC.label_final_at(DAY) + dt.timedelta(days=3))
    result = monitoring.production_accuracy(con, SPEC, DAY, {1: 0.75, 2: 0.75})
    assert not result.passed and all(v.metric < 0.3 for v in result.by_version)
    assert "worse by more than" in result.describe()
    monitoring.store_accuracy(con, result, "run-1")
    monitoring.store_accuracy(con, result, "run-2")
    rows = con.execute(f"SELECT model_version, passed, run_id FROM {monitoring.ACCURACY_TABLE} ORDER BY 1").fetchall()
    assert rows == [(1, False, "run-2"), (2, False, "run-2")]
    with pytest.raises(monitoring.NoPredictions):
        monitoring.production_accuracy(con, SPEC, DAY - dt.timedelta(days=10), {})


def test_each_version_gets_the_estimate_its_scores_gave_beside_the_realised_value_and_it_is_stored():
    from batch_platform.lib import performance_estimate as pe

    con = _warehouse(n=2_000, seed=3)
    _published(con, SPEC.label_final_at(DAY))
    # v1 calibrated on labelled rows like the day's; v2 has no map (a version trained before maps existed)
    rng = np.random.default_rng(9)
    y = rng.random(20_000) < 0.25
    calibration = pe.fit_calibration(y, np.clip(0.25 + 0.35 * (y - 0.25) + rng.normal(0, 0.2, len(y)), 0.01, 0.99))
    result = monitoring.production_accuracy(con, SPEC, DAY, {1: 0.8, 2: 0.8}, calibrations={1: calibration, 2: None})
    v1, v2 = result.by_version
    assert v1.estimated_metric is not None and v1.estimate_low < v1.estimated_metric < v1.estimate_high
    assert abs(v1.estimate_gap) < 0.05 and v1.estimate_gap == pytest.approx(v1.metric - v1.estimated_metric)
    assert v2.estimated_metric is None and v2.estimate_gap is None
    monitoring.store_accuracy(con, result, "run-1")
    stored = con.execute(f"SELECT model_version, estimated_value, estimate_gap FROM {monitoring.ACCURACY_TABLE} "
                         "ORDER BY 1").fetchall()
    assert stored[0] == (1, pytest.approx(v1.estimated_metric), pytest.approx(v1.estimate_gap))
    assert stored[1] == (2, None, None)


NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
CREATED = NOW - dt.timedelta(days=3)


def _days(flags, version=1, kind="drift_error"):
    return [PartitionEvidence(f"2013-07-{i + 1:02d}", version, **{kind: f}) for i, f in enumerate(flags)]


def _decide(evidence, previous=(), in_progress=False, created=CREATED):
    return retrain_decision(SPEC, 1, created, evidence, previous_retrains=list(previous),
                            retrain_in_progress=in_progress, now=NOW)


def test_rule_needs_3_error_days_in_the_last_5_of_the_current_champion():
    assert not _decide(_days([True, True, False, False, False, False])).request  # errors fell out of the window
    assert not _decide(_days([False, True, False, True, False])).request
    d = _decide(_days([False, True, True, False, True]))
    assert d.request and d.rule == "drift" and d.run_key == f"retrain:{SPEC.name}:v1:1"
    assert "2013-07-02, 2013-07-03, 2013-07-05" in d.reason
    # evidence about another version (the previous champion) does not count
    assert not _decide(_days([True] * 5, version=7)).request
    acc = _decide(_days([True, False, True, False, False], kind="accuracy_failed"))
    assert acc.request and acc.rule == "accuracy"
    old = _decide(_days([False] * 5), created=NOW - dt.timedelta(days=SPEC.monitoring.max_model_age_days + 1))
    assert old.request and old.rule == "model_age"


def test_same_evidence_same_key_cooldown_and_in_progress_suppress_then_a_new_episode():
    evidence = _days([True] * 5)
    assert _decide(evidence).run_key == _decide(evidence).run_key  # deterministic: a restart asks the same
    busy = _decide(evidence, in_progress=True)
    assert not busy.request and busy.suppressed and "in progress" in busy.reason
    recent = _decide(evidence, previous=[NOW - dt.timedelta(hours=2)])
    assert not recent.request and recent.suppressed and "cooldown" in recent.reason
    later = _decide(evidence, previous=[NOW - dt.timedelta(hours=SPEC.monitoring.retrain.cooldown_hours + 1)])
    assert later.request and later.run_key == f"retrain:{SPEC.name}:v1:2"
    none = retrain_decision(SPEC, None, None, evidence, previous_retrains=[], retrain_in_progress=False, now=NOW)
    assert not none.request and none.reason == "no champion yet"
    # a challenger in shadow answers the evidence: no retrain would replace it and restart its shadow days
    shadowing = retrain_decision(SPEC, 1, CREATED, evidence, previous_retrains=[], retrain_in_progress=False, now=NOW,
                                 challenger_version=2)
    assert not shadowing.request and shadowing.suppressed and "challenger v2 is in shadow" in shadowing.reason


def _published(con, at: dt.datetime, table: str = "raw.flights", partition: str = "2013-03-02") -> None:
    """Record a loaded batch published at ``at`` in the load log (what ingest writes)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute(f"CREATE TABLE IF NOT EXISTS {warehouse.LOADS_TABLE} (table_name VARCHAR, partition_key VARCHAR, "
                "published_at TIMESTAMPTZ, final_at TIMESTAMPTZ)")
    con.execute(f"INSERT INTO {warehouse.LOADS_TABLE} VALUES (?, ?, ?, ?)", [table, partition, at, at])


def test_data_clock_is_when_the_newest_batch_was_published():
    con = duckdb.connect()
    assert monitoring.data_clock(con) is None
    at = dt.datetime(2013, 3, 3, 11, tzinfo=dt.UTC)
    _published(con, at - dt.timedelta(days=1), partition="2013-03-01")
    _published(con, at, partition="2013-03-02")
    _published(con, at - dt.timedelta(days=2), table="raw.flight_schedule", partition="2013-03-03")
    assert monitoring.data_clock(con) == at


def test_a_failed_retrain_is_not_requested_again_on_the_same_evidence():
    """One request per episode: after the cooldown, the days an earlier request was based on do not count again
    (the retrain may have failed its gate, and the champion with its evidence stayed); new ERROR days do."""
    days = _days([False, True, True, False, True])
    earlier = [NOW - dt.timedelta(hours=SPEC.monitoring.retrain.cooldown_hours + 1)]
    same = retrain_decision(SPEC, 1, CREATED, days, previous_retrains=earlier, retrain_in_progress=False, now=NOW,
                            evidence_after="2013-07-05")
    assert not same.request and same.suppressed and "no new evidence" in same.reason
    later = days + [PartitionEvidence(f"2013-07-{d:02d}", 1, drift_error=True) for d in (6, 7, 8)]
    new = retrain_decision(SPEC, 1, CREATED, later, previous_retrains=earlier, retrain_in_progress=False, now=NOW,
                           evidence_after="2013-07-05")
    assert new.request and new.run_key == f"retrain:{SPEC.name}:v1:2"
