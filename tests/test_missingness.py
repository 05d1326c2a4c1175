"""The missingness audit: synthetic frames (random missingness passes, missingness that follows the label fails,
small groups are not judged), then the real flights of January-February 2013, where every flight without a tail
number was cancelled: the source's tail number fails the audit, the schedule published the evening before must
not."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from batch_platform.lib.feature_generations import published_relation
from batch_platform.lib import missingness
from batch_platform.lib.contracts import FLIGHTS
from batch_platform.lib.landing import replay
from batch_platform.lib.source import source_arrow
from tests.test_scoring import scoring_env  # noqa: F401  (a fixture: a private copy of the session platform)
from tests.test_skew import _training_set_checks

FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 2, 28)


def synthetic(seed: int, n: int = 20_000, rate: float = 0.03) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < rate).astype("int8")
    frame = pd.DataFrame({
        "label": label,
        "tailnum": [f"N{i % 500}" for i in range(n)],
        "distance": rng.integers(100, 3000, n).astype("float64"),
        "route": [f"R{i % 80}" for i in range(n)],
        "carrier": ["UA"] * n,
    })
    # missing at random, 5 % of the rows, whatever the label
    frame.loc[rng.random(n) < 0.05, "tailnum"] = None
    frame.loc[rng.random(n) < 0.02, "distance"] = np.nan
    frame.loc[rng.random(n) < 0.01, "route"] = ""  # blank counts as missing
    return frame


def test_random_missingness_passes_on_every_seed():
    for seed in range(20):
        report = missingness.audit(synthetic(seed), label="label", columns=["tailnum", "distance", "route", "carrier"])
        assert report.passed, (seed, report.describe())
        verdicts = {c.column: c.verdict for c in report.columns}
        assert verdicts == {"tailnum": "pass", "distance": "pass", "route": "pass", "carrier": "no_missing"}
    route = next(c for c in report.columns if c.column == "route")
    assert 120 < route.rows_missing < 280 and route.rows_present + route.rows_missing == 20_000


def test_missingness_concentrated_on_positives_fails():
    frame = synthetic(0)
    positives = np.flatnonzero(frame["label"] == 1)
    frame.loc[positives[: len(positives) // 2], "distance"] = np.nan  # half the positives lose their value
    report = missingness.audit(frame, label="label", columns=["tailnum", "distance"])
    assert not report.passed and report.failed == ["distance"]
    col = next(c for c in report.columns if c.column == "distance")
    assert col.rate_missing > 0.3 and col.rate_present < 0.02 and col.z > 4
    assert "distance: label rate" in report.describe()
    row = next(r for r in report.table() if r["column"] == "distance")
    assert row["verdict"] == "fail" and row["rows_missing"] == col.rows_missing
    # Missing only on negatives leaks too (two-sided): "no value -> never positive".
    frame = synthetic(1, rate=0.2)
    negatives = np.flatnonzero(frame["label"] == 0)
    frame.loc[negatives[:4000], "route"] = None
    assert missingness.audit(frame, label="label", columns=["route"]).failed == ["route"]


def test_small_groups_are_not_judged_and_tiny_differences_do_not_fail():
    frame = synthetic(2)
    positives = np.flatnonzero(frame["label"] == 1)
    frame.loc[positives[:29], "carrier"] = None  # 29 missing rows, all positive: too few to judge
    report = missingness.audit(frame, label="label", columns=["carrier"])
    assert report.passed and report.columns[0].verdict == "too_few_to_judge" and report.columns[0].rate_missing == 1
    frame.loc[positives[29:30], "carrier"] = None  # the 30th makes the group judged: it fails
    assert missingness.audit(frame, label="label", columns=["carrier"]).failed == ["carrier"]
    # 200,000 rows: 21 % vs 20 % is significant (|z| = 4.8) but not material (needs 0.5 x 20 % = 10 points).
    n_miss, n_pres = 50_000, 150_000
    label = np.r_[np.arange(n_miss) < 0.21 * n_miss, np.arange(n_pres) < 0.20 * n_pres].astype("int8")
    big = pd.DataFrame({"label": label, "x": np.r_[np.full(n_miss, np.nan), np.ones(n_pres)]})
    col = missingness.audit(big, label="label", columns=["x"]).columns[0]
    assert col.verdict == "pass" and abs(col.z) > missingness.Z_THRESHOLD


def test_label_must_be_zero_one():
    with pytest.raises(ValueError, match="0/1"):
        missingness.audit(pd.DataFrame({"label": [0, 1, None], "x": [1, 2, 3]}), label="label", columns=["x"])
    with pytest.raises(KeyError):
        missingness.audit(pd.DataFrame({"label": [0, 1]}), label="label", columns=["x"])


# ---------------------------------------------------------------------------------------------------------------
# Real data, January-February 2013. Label: cancelled (the flight never departed: dep_time is null).
def test_source_tail_number_fails_the_audit():
    """Today's replay: a schedule that copies the source's tail number carries the outcome in its nulls."""
    flights = source_arrow("flights").to_pandas()
    days = pd.to_datetime(flights[["year", "month", "day"]])
    frame = flights[(days >= pd.Timestamp(FIRST)) & (days <= pd.Timestamp(LAST))].copy()
    frame["label"] = frame["dep_time"].isna().astype("int8")
    report = missingness.audit(frame, label="label", columns=["tailnum", "carrier", "origin", "distance"])
    assert report.failed == ["tailnum"]
    tail = report.columns[0]
    assert (tail.rows_missing, tail.rate_missing) == (601, 1.0)
    assert tail.rate_present < 0.03 and tail.z > 50
    # the frame the models get writes a missing tail as the placeholder 'UNKNOWN' (so it can still be joined):
    # the placeholder is missingness too
    frame["tailnum"] = frame["tailnum"].fillna("UNKNOWN")
    assert missingness.audit(frame, label="label", columns=["tailnum"]).failed == ["tailnum"]


def test_schedule_published_the_evening_before_passes_the_audit(tmp_path):
    """The landed schedule joined to the landed flights (the outcome): whether the schedule has a tail number must
    not tell whether the flight was cancelled."""
    replay(tmp_path, FIRST, LAST, tables=["flights"])
    keys = list(FLIGHTS.key)
    on = " AND ".join(f's."{k}" = f."{k}"' for k in keys)
    con = duckdb.connect()
    try:
        frame = con.sql(
            f"SELECT s.tailnum, s.carrier, s.origin, CAST(f.dep_time IS NULL AS TINYINT) AS label "
            f"FROM read_csv('{tmp_path}/flight_schedule/*.csv', header = true, all_varchar = true) s "
            f"JOIN read_csv('{tmp_path}/flights/*.csv', header = true, all_varchar = true) f ON {on}"
        ).df()
    finally:
        con.close()
    assert len(frame) == 51_955  # every flight of the two months has its schedule row
    assert frame["label"].sum() == 1_782
    report = missingness.audit(frame, label="label", columns=["tailnum", "carrier", "origin"])
    assert report.passed, report.describe()


def test_training_set_check_fails_when_a_column_goes_missing_with_the_outcome(scoring_env):
    """On the platform's data the check passes; when the label model loses a passthrough value exactly on delayed
    flights (a third of them), the training set's blocking check fails and names the column."""
    s = scoring_env
    assert _training_set_checks(s)["no_outcome_in_missingness"].passed
    with s["connect"]() as con:
        labels = published_relation(con, "marts.flight_labels")
        con.execute(f"UPDATE {labels} SET distance = NULL WHERE is_delayed_15 AND hash(flight_id) % 3 = 0")
    check = _training_set_checks(s)["no_outcome_in_missingness"]
    assert not check.passed and check.metadata["failed_columns"].value == ["distance"]
    row = next(r for r in check.metadata["columns"].value if r["column"] == "distance")
    assert row["rate_missing"] == 1.0 and row["rows_missing"] > 300


def test_a_numeric_label_is_audited_on_its_means():
    """A regression label: missingness at random passes; a value present only for short trips fails, with the
    same z as the binary audit for a 0/1 label."""
    rng = np.random.default_rng(3)
    n = 4000
    y = rng.gamma(2.0, 10.0, n)
    frame = pd.DataFrame({"label": y, "random": np.where(rng.random(n) < 0.2, None, "x"),
                          "after_the_fact": np.where(y < 15, "gate 4", None)})
    report = missingness.audit(frame, label="label", columns=["random", "after_the_fact"], regression=True)
    assert report.failed == ["after_the_fact"] and report.regression and report.label_mean == pytest.approx(y.mean())
    assert "label mean" in report.describe()
    binary = pd.DataFrame({"label": (y > 20).astype(int), "x": frame["after_the_fact"]})
    z_binary = missingness.audit(binary, label="label", columns=["x"]).columns[0].z
    as_numeric = missingness.audit(binary, label="label", columns=["x"], regression=True)
    assert as_numeric.columns[0].z == pytest.approx(z_binary)
    with pytest.raises(ValueError, match="numeric and finite"):
        missingness.audit(pd.DataFrame({"label": [1.5, None], "x": [1, 2]}), label="label", columns=["x"],
                          regression=True)
