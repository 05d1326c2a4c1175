"""A training set built in parts (``lib/training_set_build.py``) is the whole frame built at once: the same rows in
the snapshot, the same fingerprint, summary and check reports; each check fed in parts reports what it reports on
the whole frame; the label rows read in parts are typed as the whole frame."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from batch_platform import settings
from batch_platform.lib import leakage, missingness, scoring, skew, training_set, training_set_build
from batch_platform.lib.feature_store import FeatureStoreClient
from batch_platform.lib.specs import load_specs
from batch_platform.lib.warehouse import connect
from tests.test_skew import CUTOFF, frames

META = ["partition_date", "model_version", "run_id"]


def _parts(n: int, sizes: list[int]) -> list[slice]:
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == n
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def test_checks_fed_in_parts_report_what_they_report_on_the_whole_frame():
    training, served = frames(1000)
    served = served.sort_values("flight_id").reset_index(drop=True)
    # mismatches in three columns, more in some parts than the examples kept, and leaks of both kinds
    training.loc[3:400:9, "plane_delay_rate_28d"] = 0.5
    training.loc[600:990:40, "tailnum"] = "N0"
    training.loc[[5, 700], "sched_dep_hour"] = 99
    training["label_final_at"] = pd.Timestamp("2013-02-22 11:00", tz="UTC")
    training.loc[500:520, "label_final_at"] = pd.Timestamp("2013-03-05", tz="UTC")
    training.loc[::50, "plane_valid_from"] = CUTOFF + pd.Timedelta(hours=1)
    training["label"] = (training.index % 7 == 0).astype("int8")
    training.loc[training["label"] == 1, "tailnum"] = None  # missingness that follows the label
    cut = dt.datetime(2013, 3, 1, tzinfo=dt.UTC)
    audited = ["tailnum", "sched_dep_hour", "plane_flights_28d"]

    whole_skew = skew.compare(training, served, key="flight_id", exclude=META)
    whole_leaks = leakage.check_training_set(training, cut, key="flight_id")
    whole_missing = missingness.audit(training, label="label", columns=audited)
    assert not whole_skew.passed and len(whole_skew.column_mismatches) == 4 and len(whole_skew.examples) == 5
    assert not whole_leaks.passed and whole_leaks.label_violations == 21
    assert whole_missing.failed == ["tailnum"]

    for sizes in ([1000], [1, 333, 2, 664], [100] * 10):
        skews = skew.SkewComparison(served.columns, key="flight_id", exclude=META)
        leaks = leakage.LeakageCheck(cut, key="flight_id")
        missing = missingness.MissingnessAudit(label="label", columns=audited)
        for part in _parts(len(training), sizes):
            rows = training.iloc[part].reset_index(drop=True)
            keys = rows["flight_id"]
            skews.add(rows, served[served["flight_id"].between(keys.iloc[0], keys.iloc[-1])])
            leaks.add(rows)
            missing.add(rows)
        assert skews.report(rows_served=len(served)) == whole_skew
        assert leaks.report() == whole_leaks
        report = missing.report()
        if sizes == [1000]:
            assert report == whole_missing  # one part: the very numbers
        for mine, theirs in zip(report.columns, whole_missing.columns, strict=True):
            assert (mine.column, mine.rows_present, mine.rows_missing, mine.verdict) == (
                theirs.column, theirs.rows_present, theirs.rows_missing, theirs.verdict)
            for field in ("rate_present", "rate_missing", "z"):
                expected = getattr(theirs, field)
                assert getattr(mine, field) == (None if expected is None else pytest.approx(expected, rel=1e-12))
        assert report.label_mean == pytest.approx(whole_missing.label_mean, rel=1e-12)


def test_label_rows_read_in_parts_are_typed_as_the_whole_frame(tmp_path):
    """DuckDB gives pandas an integer column with a null as a nullable one and one without as numpy's: a column
    whose nulls are all in a later part is still nullable in the first."""
    con = duckdb.connect()
    query = ("SELECT range AS k, CASE WHEN range > 5000 AND range % 3 = 0 THEN NULL ELSE range::INT END AS n, "
             "CASE WHEN range > 7000 THEN NULL ELSE range % 2 = 0 END AS b, (range % 7)::UTINYINT AS u, "
             "'x' || range AS s, DATE '2013-01-01' + (range % 30)::INT AS d FROM range(9000) ORDER BY k")
    con.execute(f"COPY ({query}) TO '{tmp_path / 'labels.parquet'}' (FORMAT parquet)")
    whole = con.sql(query).df()
    staged = training_set_build.Staged(tmp_path, None, None, 9000, 0, [])
    parts = list(training_set_build._label_parts(staged, 2048))
    assert [len(p) for p in parts] == [2048] * 4 + [808]
    assert str(parts[0]["n"].dtype) == "Int32" and str(parts[0]["b"].dtype) == "boolean"
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    with pytest.raises(ValueError, match="multiple of 2048"):
        list(training_set_build._label_parts(staged, 5000))


@pytest.fixture
def small_groups(monkeypatch):
    """Slices and row groups smaller than the session's training sets, so that parts cross them."""
    monkeypatch.setattr(training_set, "FINGERPRINT_ROWS", 3000)
    monkeypatch.setattr(training_set_build, "SNAPSHOT_ROW_GROUP_ROWS", 2500)


@pytest.mark.parametrize("name", ["flight_delay", "flight_cancellation"])
def test_a_set_built_in_parts_is_the_whole_frame_built_at_once(on_platform, small_groups, tmp_path, name):
    spec = load_specs()[name]
    event = on_platform["instance"].get_latest_materialization_event(dg.AssetKey([f"{name}_training_set"]))
    recorded = event.asset_materialization.metadata
    cutoff = dt.datetime.fromisoformat(recorded["training_cutoff"].value)
    client = FeatureStoreClient()
    with connect(settings.warehouse_path(), read_only=True) as con:
        staged = training_set_build.stage(con, spec, cutoff, tmp_path)
        labels = training_set.label_frame(con, spec, cutoff)
        stamps = labels[training_set.EVENT_TIMESTAMP]
        served = scoring.read_served_features(con, spec, stamps.min().to_pydatetime(), stamps.max().to_pydatetime())
    whole = client.historical_features(labels, spec.feature_service, timestamp_column=training_set.EVENT_TIMESTAMP)
    assert staged.rows == len(whole) > 3 * 2048

    seen = []
    built = training_set_build.build(staged, client, tmp_path / "sets", chunk_rows=2048,
                                     progress=lambda done, total: seen.append((done, total)))
    assert seen == [(min(k * 2048, len(whole)), len(whole)) for k in range(1, -(-len(whole) // 2048) + 1)]
    stored = pq.ParquetFile(built.snapshot)
    assert stored.read().equals(training_set.snapshot_table(whole), check_metadata=False)
    sizes = [stored.metadata.row_group(i).num_rows for i in range(stored.metadata.num_row_groups)]
    assert set(sizes[:-1]) == {2500} and 0 < sizes[-1] <= 2500
    assert built.summary.fingerprint == training_set.frame_fingerprint(whole, spec.entity.key)
    assert built.snapshot.name == f"{built.summary.fingerprint[:16]}.parquet"
    assert built.columns == list(whole.columns)
    days = pd.to_datetime(whole[spec.label.date_column])
    assert dataclasses.replace(built.summary, label_mean=0.0, fingerprint="") == training_set.TrainingSetSummary(
        rows=len(whole), label_mean=0.0, first_day=days.min().date(), last_day=days.max().date(),
        rows_per_split=whole[training_set.SPLIT].value_counts().sort_index().to_dict(), fingerprint="")
    assert built.summary.label_mean == pytest.approx(whole[training_set.LABEL].mean(), rel=1e-12)
    assert built.leakage == leakage.check_training_set(whole, cutoff, key=spec.entity.key)
    assert built.skew == skew.compare(whole, served, key=spec.entity.key, exclude=scoring.served_meta_columns(spec))
    audited = list(dict.fromkeys([*spec.entity.join_keys, *spec.passthrough_features]))
    whole_missing = missingness.audit(whole, label=training_set.LABEL, columns=audited,
                                      regression=spec.is_regression)
    assert [(c.column, c.rows_missing, c.verdict) for c in built.missingness.columns] == [
        (c.column, c.rows_missing, c.verdict) for c in whole_missing.columns]

    # the asset built the session's set in parts of its own size: the same rows, the same fingerprint
    asset_snapshot = Path(recorded["snapshot"].value)
    assert pq.read_table(asset_snapshot).equals(training_set.snapshot_table(whole), check_metadata=False)
    assert not list(asset_snapshot.parent.glob(f"{training_set_build.STAGING_PREFIX}*"))  # staging removed
    logs = [e.user_message for e in on_platform["instance"].all_logs(event.run_id)]
    assert f"{name}: {len(whole)} / {len(whole)} rows joined" in logs  # the step logs its progress per part


def test_a_new_build_removes_what_a_killed_one_left_and_nothing_else(tmp_path):
    """Staging folders are named for their process: a dead one's are removed, a live one's (another build of the
    same set, a pool of more than one slot) are left alone."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "from batch_platform.lib import training_set_build as b; "
                             f"print(b.staging_folder(__import__('pathlib').Path({str(tmp_path)!r})))"],
                            stdout=subprocess.PIPE, text=True)
    left = Path(gone.communicate()[0].strip())
    (left / "labels.parquet").write_bytes(b"partial")
    foreign = tmp_path / f"{training_set_build.STAGING_PREFIX}not-ours"
    foreign.mkdir()
    live = training_set_build.staging_folder(tmp_path)
    assert left.parent == tmp_path and not left.exists() and not foreign.exists()
    assert live.is_dir() and str(os.getpid()) in live.name
    again = training_set_build.staging_folder(tmp_path)
    assert live.is_dir() and again.is_dir() and again != live  # this process is alive: its folder stays
