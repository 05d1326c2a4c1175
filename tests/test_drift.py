"""Drift checks (lib) on synthetic days: power on a 0.25σ shift over seeds, false ERRORs on stable days, a feed
gone NULL, the score on its own, correlated columns counted once, the frozen reference round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch_platform.lib import drift, drift_report
from batch_platform.lib.training_set import EVENT_TIMESTAMP

TRAINING_DAYS = 35
DAY_ROWS = 900  # about one day of New York departures
SEEDS = 100


def _day(rng: np.random.Generator, n: int, day: int, shift: dict[str, float] | None = None
         ) -> tuple[pd.DataFrame, np.ndarray]:
    """One day: ``steady`` columns vary only by sampling; ``volatile`` moves by day (like a 7-day delay rate
    after a storm); ``twin`` is ``steady1`` plus a little noise (one correlation group with it). ``shift`` adds
    to columns, in units of their reference standard deviation."""
    day_rng = np.random.default_rng(10_000 + day)  # the day's own conditions, whatever the seed
    df = pd.DataFrame({f"steady{i}": rng.normal(size=n) for i in range(4)})
    df["twin"] = df["steady1"] + rng.normal(scale=0.2, size=n)
    df["volatile"] = rng.normal(size=n) + day_rng.normal(scale=0.4)
    df["counts"] = rng.poisson(6, size=n).astype(float)
    df["carrier"] = rng.choice(["AA", "B6", "DL", "UA"], size=n, p=[0.2, 0.3, 0.2, 0.3])
    df[EVENT_TIMESTAMP] = pd.Timestamp("2013-01-01", tz="UTC") + pd.Timedelta(days=day)
    scores = 1 / (1 + np.exp(-(0.8 * df["steady1"] - 0.5 * df["steady2"] + 0.3 * df["volatile"] - 1.5)))
    for column, sigmas in (shift or {}).items():
        df[column] += sigmas * (np.sqrt(6) if column == "counts" else 1.0)
    return df, scores.to_numpy()


def _training(rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    days = [_day(rng, DAY_ROWS, d) for d in range(TRAINING_DAYS)]
    return pd.concat([f for f, _ in days], ignore_index=True), np.concatenate([s for _, s in days])


@pytest.fixture(scope="module")
def reference() -> drift.DriftReference:
    frame, scores = _training(np.random.default_rng(12345))
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    return drift.build_reference(frame, features, ["carrier"], scores, seed=1)


def test_reference_is_calibrated_per_day(reference):
    cal = reference.calibration
    assert cal["batch_column"] == EVENT_TIMESTAMP and len(cal["batches"]) == TRAINING_DAYS
    assert set(cal["distances"]) == {c for c, _ in reference.tests()}
    # steady columns vary by sampling only; the volatile one by its day-to-day movement
    assert max(reference.calibrated("steady0")) < 0.12 < 0.3 < max(reference.calibrated("volatile"))
    assert ["steady1", "twin"] in reference.groups and reference.group_of("volatile") == "volatile"
    assert reference.missing_share == {c: 0.0 for c in reference.numeric + reference.categorical}


def _calibrate_batch_by_batch(ref, frame, scores, batches, sample_batches) -> dict:
    """The calibration as its definition reads: each batch's side against the reference side of the other
    batches' sample rows, built afresh per batch (what lib.drift_reference._calibrate computes faster)."""
    from batch_platform.lib import drift_statistics as ds
    from batch_platform.lib.drift_reference import MIN_BATCH_ROWS

    keys, rows, values = [], [], {c: [] for c, _ in ref.tests()}
    for key, pos in pd.Series(np.arange(len(frame))).groupby(batches.to_numpy(), sort=True):
        pos = pos.to_numpy()
        if len(pos) < MIN_BATCH_ROWS:
            continue
        current = ds.current_side(ref, frame.iloc[pos], np.asarray(scores)[pos])
        d = ds.distances(ref, ds.reference_side(ref, sample_batches != key), current)
        keys.append(str(key))
        rows.append(int(len(pos)))
        for c, m in ref.tests():
            values[c].append(round(d[(c, m)], 6) if np.isfinite(d[(c, m)]) else None)
    return {"batch_column": str(batches.name), "batches": keys, "rows": rows, "distances": values}


def test_calibration_equals_the_batch_by_batch_definition():
    """Missing values, an unseen category, mixed types in a categorical, a batch too small to use, -0.0 and 0.0:
    the calibration is the batch-by-batch one, value for value."""
    from batch_platform.lib.drift_reference import _calibrate

    rng = np.random.default_rng(7)
    frame, scores = _training(rng)
    frame.loc[rng.choice(len(frame), 2000, replace=False), "steady0"] = np.nan
    frame.loc[rng.choice(len(frame), 500, replace=False), "carrier"] = None
    frame["counts"] = frame["counts"].astype(object)
    frame.loc[frame.index[:40], "counts"] = "n/a"  # not numeric: coerced to NaN on both paths
    frame.loc[frame.index[::97], "twin"] = -0.0
    frame.loc[frame.index[1::97], "twin"] = 0.0
    frame["carrier"] = frame["carrier"].astype(object)
    frame.loc[frame.index[5::301], "carrier"] = 7  # an int among the strings
    small = frame.index[frame[EVENT_TIMESTAMP] == frame[EVENT_TIMESTAMP].max()][50:]
    frame, scores = frame.drop(index=small).reset_index(drop=True), np.delete(scores, small)
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    ref = drift.build_reference(frame, features, ["carrier"], scores, seed=3)
    batches = frame[EVENT_TIMESTAMP]
    sample_batches = batches.to_numpy()[np.sort(np.random.default_rng(3).choice(len(frame), size=min(5000, len(frame)),
                                                                            replace=False))]
    expected = _calibrate_batch_by_batch(ref, frame, scores, batches, sample_batches)
    assert len(expected["batches"]) == TRAINING_DAYS - 1  # the cut-down last day is too small
    assert _calibrate(ref, frame, scores, batches, sample_batches) == expected == ref.calibration


def test_power_and_false_alarms_over_seeds(reference):
    """A 0.25σ shift of one steady column (each in turn, 20 seeds each) makes the day ERROR in >= 95 % of the
    trials; of the volatile column, rarely; stable days are ERROR in <= 5 %."""
    thresholds = drift.DriftThresholds()  # the shipped specs' values
    steady = ["steady0", "steady2", "steady3", "counts", "twin"]
    caught = {c: 0 for c in steady + ["volatile"]}
    stable_errors = 0
    for seed in range(SEEDS):
        day = TRAINING_DAYS + 15 + seed % 31  # a day after the training window, as scoring sees them
        rng = np.random.default_rng(1000 + seed)
        column = steady[seed % len(steady)]
        frame, scores = _day(rng, DAY_ROWS, day, shift={column: 0.25})
        caught[column] += drift.evaluate(reference, frame, scores, thresholds).severity == drift.ERROR
        frame, scores = _day(rng, DAY_ROWS, day, shift={"volatile": 0.25})
        caught["volatile"] += drift.evaluate(reference, frame, scores, thresholds).severity == drift.ERROR
        frame, scores = _day(rng, DAY_ROWS, day)
        stable_errors += drift.evaluate(reference, frame, scores, thresholds).severity == drift.ERROR
    print(f"0.25σ shift: day ERROR {caught} (of {SEEDS // len(steady)} each for steady columns, {SEEDS} for "
          f"the volatile one); stable days ERROR {stable_errors}/{SEEDS}")
    assert sum(caught[c] for c in steady) >= 0.95 * SEEDS
    assert stable_errors <= 0.05 * SEEDS
    assert caught["volatile"] <= 0.5 * SEEDS  # a column that moves by day has no power at 0.25σ (documented)


@pytest.mark.parametrize("column", ["steady3", "counts", "carrier"])
def test_a_feed_gone_null_is_an_error_on_its_own(reference, column):
    frame, scores = _day(np.random.default_rng(7), DAY_ROWS, TRAINING_DAYS + 20)
    frame[column] = None
    result = drift.evaluate(reference, frame, scores, drift.DriftThresholds())
    (test,) = [c for c in result.columns if c.column == column and c.method == drift.MISSING_SHARE]
    assert test.severity == drift.ERROR and test.value == 1.0
    assert result.severity == drift.ERROR and result.reasons()[0] == f"{column} missing 100% (reference 0%)"


def test_missing_share_rise_against_binomial_bound_and_jump():
    rng = np.random.default_rng(8)
    frame, scores = _training(rng)
    frame.loc[rng.random(len(frame)) < 0.05, "steady3"] = np.nan  # 5 % missing in training
    ref = drift.build_reference(frame, [c for c in frame.columns if c != EVENT_TIMESTAMP], ["carrier"], scores)
    assert ref.missing_share["steady3"] == pytest.approx(0.05, abs=0.005)

    def severity(share):
        day, day_scores = _day(np.random.default_rng(9), DAY_ROWS, TRAINING_DAYS + 20)
        day.loc[np.random.default_rng(10).random(DAY_ROWS) < share, "steady3"] = np.nan
        result = drift.evaluate(ref, day, day_scores, drift.DriftThresholds())
        return next(c.severity for c in result.columns if c.column == "steady3" and c.method == drift.MISSING_SHARE)

    assert severity(0.06) == drift.OK  # within sampling noise of 5 %
    assert severity(0.12) == drift.WARN  # beyond half the jump
    assert severity(0.25) == drift.ERROR  # beyond 5 % + 0.1


def test_the_score_alone_makes_the_day_an_error(reference):
    frame, scores = _day(np.random.default_rng(11), DAY_ROWS, TRAINING_DAYS + 20)
    result = drift.evaluate(reference, frame, np.clip(scores * 2.0, 0, 1), drift.DriftThresholds())
    assert result.severity == drift.ERROR and len(result.reasons()) == 1
    assert result.reasons()[0].startswith("score psi") and not result.error_groups()


def test_correlated_columns_count_once(reference):
    thresholds = drift.DriftThresholds(min_error_groups=2)
    frame, scores = _day(np.random.default_rng(12), DAY_ROWS, TRAINING_DAYS + 20)
    twins = frame.copy()
    twins[["steady1", "twin"]] += 1.0  # one group: one ERROR group, not two
    result = drift.evaluate(reference, twins, scores, thresholds)
    assert {c.column for c in result.flagged(drift.ERROR)} >= {"steady1", "twin"}
    assert result.error_groups() == ["steady1"] and result.severity == drift.WARN
    apart = frame.copy()
    apart[["steady0", "steady3"]] += 1.0  # two groups
    assert drift.evaluate(reference, apart, scores, thresholds).severity == drift.ERROR


@pytest.fixture(scope="module")
def edge_reference() -> drift.DriftReference:
    """The synthetic training days plus a constant column (reference std 0) and a categorical with missing values
    in training (``__missing__`` is one of its categories; ``carrier`` has none, so a missing carrier is
    ``__other__``)."""
    rng = np.random.default_rng(21)
    frame, scores = _training(rng)
    frame["seats"] = 150.0
    frame["gate"] = pd.Series(rng.choice(["A", "B", "C"], size=len(frame)), dtype=object)
    frame.loc[rng.random(len(frame)) < 0.1, "gate"] = None
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    return drift.build_reference(frame, features, ["carrier", "gate"], scores, seed=2)


@pytest.mark.parametrize("calibrated", [True, False])
def test_a_reference_built_in_parts_is_the_whole_frames(tmp_path, calibrated):
    """``build_reference_in_parts`` (the candidate step reads the train window a row group at a time) freezes the
    reference ``build_reference`` freezes from the whole frame, byte for byte (the same sha256): in parts of any
    size, parts holding no sample row, a categorical with missing values, a numeric with NaNs, a constant column."""
    rng = np.random.default_rng(23)
    frame, scores = _training(rng)
    frame["seats"] = 150.0
    frame["gate"] = pd.Series(rng.choice(["A", "B", "C"], size=len(frame)), dtype=object)
    frame.loc[rng.random(len(frame)) < 0.1, "gate"] = None
    frame.loc[rng.random(len(frame)) < 0.05, "counts"] = np.nan
    if not calibrated:
        frame = frame.drop(columns=[EVENT_TIMESTAMP])
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    whole = drift.build_reference(frame, features, ["carrier", "gate"], scores, rows=500, seed=4)
    assert bool(whole.calibration) == calibrated
    _, expected = drift.save_reference(whole, tmp_path / "whole")
    by_row = dict(zip(frame.index, scores))
    for sizes in ([len(frame)], [1, 7, 900, 4000], [10_000], [3, len(frame) - 3]):
        bounds = np.cumsum([0, *sizes])
        bounds = [*bounds[bounds < len(frame)], len(frame)]
        reads = []

        def parts():
            reads.append(1)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                yield frame.iloc[lo:hi]

        ref = drift.build_reference_in_parts(
            parts, len(frame), features, ["carrier", "gate"],
            lambda part: np.array([by_row[i] for i in part.index]), rows=500, seed=4)
        assert drift.save_reference(ref, tmp_path / "parts")[1] == expected, sizes
        assert len(reads) == (2 if calibrated and len(bounds) > 2 else 1)  # read again only to calibrate
    with pytest.raises(ValueError, match="rows"):
        drift.build_reference_in_parts(lambda: iter([frame.iloc[:10]]), len(frame), features, ["carrier", "gate"],
                                       lambda part: scores[:len(part)], rows=500)


def _edge_days() -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    rng = np.random.default_rng(22)

    def day(n=DAY_ROWS):
        frame, scores = _day(rng, n, TRAINING_DAYS + 20)
        frame["seats"] = 150.0
        frame["gate"] = pd.Series(rng.choice(["A", "B", "C"], size=n), dtype=object)
        frame.loc[rng.random(n) < 0.1, "gate"] = None  # as in training
        return frame, scores

    days = {"stable": day()}
    frame, scores = day()
    frame["steady3"] += 1.5
    frame["carrier"] = rng.choice(["AA", "ZZ"], size=len(frame))  # a carrier never seen in training
    frame.loc[:40, "carrier"] = None  # missing, and __missing__ is not a carrier category: __other__
    days["shifted, unseen and missing categories"] = (frame, scores)
    frame, scores = day()
    frame["steady0"], frame["gate"], frame["carrier"] = np.nan, None, None
    days["all-NULL columns"] = (frame, scores)
    frame, scores = day()
    frame["seats"] = 180.0  # the reference's std is 0: Evidently norms by 0.001
    frame.loc[:10, "counts"] = np.inf  # dropped by Evidently like NaN
    days["constant column moved, infinities"] = (frame, scores)
    frame, scores = day()
    frame["gate"] = frame["gate"].astype("category")
    frame["counts"] = frame["counts"].astype("int64")
    days["pandas category and integer dtypes"] = (frame, scores)
    days["tiny day"] = day(3)
    frame, scores = day(1)
    days["one row"] = (frame, scores)
    return days


def test_fast_statistics_equal_evidentlys_report(edge_reference):
    """The check's distances are Evidently's ``ValueDrift`` values (1e-9 relative) and every verdict (per test and
    for the day) is the one Evidently's values give, on stable and drifted days and on edge cases."""
    ref, thresholds = edge_reference, drift.DriftThresholds()
    floors = {drift.WASSERSTEIN: thresholds.wasserstein_warn, drift.PSI: thresholds.psi_warn}
    severities = {}
    for name, (frame, scores) in _edge_days().items():
        fast = drift.evaluate(ref, frame, scores, thresholds)
        evidently = drift_report.evidently_values(drift_report.evidently_snapshot(ref, frame, scores, floors))
        ours = {(c.column, c.method): c.value for c in fast.columns if c.method != drift.MISSING_SHARE}
        for key, value in ours.items():
            if key in evidently:
                assert value == pytest.approx(evidently[key], rel=1e-9, abs=1e-12), (name, key)
            else:  # Evidently refuses a column without a value: no distance, its missing-share test speaks
                assert np.isnan(value) and frame[key[0]].isna().all(), (name, key)
        prepared = drift.prepare(ref, frame, scores)
        means = {c: float(np.nanmean(prepared[c])) if prepared[c].notna().any() else None for c in ref.numeric}
        via_evidently = drift.judge(ref, len(frame), evidently, drift.missing_shares(ref, frame), thresholds, means)
        assert [(c.column, c.method, c.severity) for c in fast.columns] == \
            [(c.column, c.method, c.severity) for c in via_evidently.columns], name
        assert (fast.severity, fast.reasons()) == (via_evidently.severity, via_evidently.reasons()), name
        severities[name] = fast.severity
    assert severities["stable"] != drift.ERROR
    assert severities["shifted, unseen and missing categories"] == severities["all-NULL columns"] == drift.ERROR


def test_drifted_day_verdicts(edge_reference):
    frame, scores = _edge_days()["shifted, unseen and missing categories"]
    result = drift.evaluate(edge_reference, frame, scores, drift.DriftThresholds())
    by = {(c.column, c.method): c for c in result.columns}
    assert by[("steady3", drift.WASSERSTEIN)].value == pytest.approx(1.5, abs=0.15)
    assert by[("steady3", drift.WASSERSTEIN)].severity == drift.ERROR
    assert by[("carrier", drift.PSI)].severity == drift.ERROR
    assert by[(drift.SCORE, drift.WASSERSTEIN)].severity == drift.OK  # the score is judged on its bins
    assert by[("steady0", drift.WASSERSTEIN)].severity == drift.OK
    assert result.severity == drift.ERROR and not result.passed and "steady3" in result.describe()


def test_report_rendered_from_saved_inputs(edge_reference, tmp_path):
    """The check saves only the report's inputs; rendering them gives Evidently's report, once."""
    ref_path, sha = drift.save_reference(edge_reference, tmp_path / "refs")
    frame, scores = _edge_days()["shifted, unseen and missing categories"]
    html = tmp_path / "reports" / "day" / "run.html"
    inputs = drift_report.save_inputs(html, edge_reference, ref_path, sha, frame, scores, drift.DriftThresholds())
    assert inputs.is_file() and not html.exists() and drift_report.renderable(html)
    assert drift_report.render(html) == html and not drift_report.renderable(html)
    text = html.read_text()
    assert "Drift in column" in text and "steady3" in text and len(text) > 10_000
    stamp = html.stat().st_mtime_ns
    assert drift_report.render(html) == html and html.stat().st_mtime_ns == stamp  # cached, not rendered again
    with pytest.raises(drift_report.DriftReportError, match="no drift report inputs"):
        drift_report.render(tmp_path / "reports" / "day" / "other.html")


def test_uncalibrated_reference_only_warns_on_distances():
    frame, scores = _training(np.random.default_rng(13))
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    ref = drift.build_reference(frame.drop(columns=[EVENT_TIMESTAMP]), features, ["carrier"], scores)
    assert ref.calibration == {}
    day, day_scores = _day(np.random.default_rng(14), DAY_ROWS, TRAINING_DAYS + 20, shift={"steady0": 2.0})
    result = drift.evaluate(ref, day, day_scores, drift.DriftThresholds())
    assert result.severity == drift.WARN and not result.calibrated and "not calibrated" in result.describe()
    day["steady3"] = None
    assert drift.evaluate(ref, day, day_scores, drift.DriftThresholds()).severity == drift.ERROR


def test_reference_round_trip_is_verified(reference, tmp_path):
    path, sha = drift.save_reference(reference, tmp_path)
    again = drift.load_reference(path, sha)
    pd.testing.assert_frame_equal(again.sample, reference.sample)
    assert again.meta() == reference.meta()
    assert drift.save_reference(reference, tmp_path) == (path, sha)  # content-addressed
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(drift.DriftReferenceError, match="altered"):
        drift.load_reference(path, sha)
    with pytest.raises(drift.DriftReferenceError, match="missing"):
        drift.load_reference(tmp_path / "nope.parquet", sha)


def test_excluded_columns_are_not_tested():
    frame, scores = _day(np.random.default_rng(3), 3000, 0)
    ref = drift.build_reference(frame, [c for c in frame.columns if c != EVENT_TIMESTAMP], ["carrier"], scores,
                                exclude=["steady0", "counts"])
    assert "steady0" not in ref.numeric and "counts" not in ref.numeric and "steady1" in ref.numeric
