"""Drift checks (lib): power on a small mean shift, false ERRORs on stable batches, frozen reference round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch_platform.lib import drift

N_FEATURES = 8
REFERENCE_ROWS = 5000
BATCH_ROWS = 1000  # about one day of New York departures


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(N_FEATURES)})
    df["x0"] += shift  # in units of the reference standard deviation (1)
    df["counts"] = rng.poisson(6, size=n)
    df["carrier"] = rng.choice(["AA", "B6", "DL", "UA"], size=n, p=[0.2, 0.3, 0.2, 0.3])
    scores = 1 / (1 + np.exp(-(0.8 * df["x1"] - 0.5 * df["x2"] - 1.5)))
    return df, scores.to_numpy()


@pytest.fixture(scope="module")
def reference() -> drift.DriftReference:
    rng = np.random.default_rng(12345)
    frame, scores = _frame(rng, 20_000)
    return drift.build_reference(frame, list(frame.columns), ["carrier"], scores, rows=REFERENCE_ROWS, seed=1)


def test_power_and_false_alarms_over_20_seeds(reference):
    thresholds = drift.DriftThresholds()  # the shipped specs' values
    shifted_flagged, stable_errors, stable_warns = 0, 0, 0
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        frame, scores = _frame(rng, BATCH_ROWS, shift=0.25)
        result = drift.evaluate(reference, frame, scores, thresholds)
        shifted_flagged += any(c.column == "x0" for c in result.flagged())
        rng = np.random.default_rng(5000 + seed)
        frame, scores = _frame(rng, BATCH_ROWS)
        stable = drift.evaluate(reference, frame, scores, thresholds)
        stable_errors += stable.severity == drift.ERROR
        stable_warns += stable.severity == drift.WARN
    assert shifted_flagged >= 19, f"0.25σ shift flagged in {shifted_flagged}/20 batches"
    assert stable_errors <= 1, f"ERROR on {stable_errors}/20 stable batches"
    print(f"shift flagged {shifted_flagged}/20, stable ERROR {stable_errors}/20, stable WARN {stable_warns}/20")


def test_per_column_tests_and_html_report(reference, tmp_path):
    rng = np.random.default_rng(7)
    frame, scores = _frame(rng, BATCH_ROWS)
    frame["carrier"] = rng.choice(["AA", "ZZ"], size=BATCH_ROWS)  # a carrier never seen in training
    frame["x3"] += 1.5
    result = drift.evaluate(reference, frame, scores + 0.3, drift.DriftThresholds(), html_path=tmp_path / "r.html")
    by = {c.column: c for c in result.columns}
    assert by["x0"].method == "wasserstein" and by["carrier"].method == "psi"
    assert by[drift.SCORE_BIN].method == "psi" and by[drift.SCORE].severity == drift.OK
    assert by["x3"].severity == drift.ERROR and by["x3"].value == pytest.approx(1.5, abs=0.15)
    assert by["carrier"].severity == drift.ERROR and by[drift.SCORE_BIN].severity == drift.ERROR
    assert by["x0"].severity == drift.OK and result.severity == drift.ERROR and not result.passed
    assert (tmp_path / "r.html").stat().st_size > 10_000 and "x3" in result.describe()


def test_reference_round_trip_is_verified(reference, tmp_path):
    path, sha = drift.save_reference(reference, tmp_path)
    again = drift.load_reference(path, sha)
    pd.testing.assert_frame_equal(again.sample, reference.sample)
    assert again.score_edges == reference.score_edges and again.categories == reference.categories
    assert drift.save_reference(reference, tmp_path) == (path, sha)  # content-addressed
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(drift.DriftReferenceError, match="altered"):
        drift.load_reference(path, sha)
    with pytest.raises(drift.DriftReferenceError, match="missing"):
        drift.load_reference(tmp_path / "nope.parquet", sha)


def test_excluded_columns_are_not_tested():
    rng = np.random.default_rng(3)
    frame, scores = _frame(rng, 3000)
    ref = drift.build_reference(frame, list(frame.columns), ["carrier"], scores, exclude=["x0", "counts"])
    assert "x0" not in ref.numeric and "counts" not in ref.numeric and "x1" in ref.numeric
