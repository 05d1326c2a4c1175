"""Training/serving skew: the comparison itself (pure), then the real path — scoring stores the feature values it
served, in the same transaction as the predictions, and the training set's blocking check compares its rows with
them (passing on the platform's own data, failing when a served value no longer matches)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from batch_platform.lib import scoring, skew, training_set
from tests.test_scoring import _score, _stored, scoring_env  # noqa: F401  (scoring_env is a fixture)

CUTOFF = pd.Timestamp("2013-02-19 23:00", tz="UTC")
N = 1000


def frames(n: int = N) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A training frame and the served rows of the same entities, equal in value but typed as each path types them:
    nullable Int64 vs float64 (Feast), ns vs us timestamps, float round-off, object vs string dtype."""
    rng = np.random.default_rng(0)
    keys = [f"k{i:04d}" for i in range(n)]
    rate = rng.random(n)
    rate[::7] = np.nan
    flights = pd.array(rng.integers(0, 40, n), dtype="Int64")
    flights[::11] = pd.NA
    valid = pd.Series(pd.to_datetime("2013-02-19 11:00", utc=True), index=range(n))
    valid[::13] = pd.NaT
    tail = pd.Series([f"N{i % 97}" for i in range(n)], dtype=object)
    tail[::17] = None
    training = pd.DataFrame({
        "flight_id": keys, "flight_date": dt.date(2013, 2, 20), "event_timestamp": CUTOFF,
        "tailnum": tail, "sched_dep_hour": rng.integers(5, 23, n).astype("int32"),
        "plane_flights_28d": flights, "plane_delay_rate_28d": rate,
        "plane_valid_from": valid.astype("datetime64[ns, UTC]"),
        "label": rng.integers(0, 2, n).astype("int8"), "split": "test",
    })
    served = pd.DataFrame({
        "partition_date": dt.date(2013, 2, 20), "flight_id": keys,
        "prediction_cutoff": CUTOFF.as_unit("us"), "model_version": 3, "run_id": "r1",
        "tailnum": training["tailnum"].astype("string"),
        "sched_dep_hour": training["sched_dep_hour"].astype("int64"),
        "plane_flights_28d": training["plane_flights_28d"].astype("float64"),
        "plane_delay_rate_28d": rate * (1 + 1e-12),
        "plane_valid_from": valid.astype("datetime64[us, UTC]"),
    }).iloc[::-1].reset_index(drop=True)  # another row order: rows are matched by key and cutoff
    return training, served


def compare(training, served, **kw) -> skew.SkewReport:
    return skew.compare(training, served, key="flight_id", exclude=["partition_date", "model_version", "run_id"],
                        **kw)


def test_equal_values_in_other_dtypes_and_order_pass():
    training, served = frames()
    report = compare(training, served)
    assert report.passed, report.describe()
    assert (report.rows_compared, report.rows_mismatched, report.column_mismatches) == (N, 0, {})
    assert report.columns_compared == ["tailnum", "sched_dep_hour", "plane_flights_28d", "plane_delay_rate_28d",
                                       "plane_valid_from"]


@pytest.mark.parametrize("changed, passed", [(1, True), (2, False)])
def test_threshold_is_a_tenth_of_a_percent_of_the_rows_compared(changed, passed):
    """1 of 1000 rows differing (0.1 %) is at the limit and passes; 2 of 1000 fail."""
    training, served = frames()
    served.loc[served["flight_id"].isin([f"k{i:04d}" for i in range(1, 1 + changed)]), "plane_delay_rate_28d"] = 0.5
    report = compare(training, served)
    assert report.rows_mismatched == changed and report.mismatch_share == changed / N
    assert report.passed is passed
    assert report.column_mismatches == {"plane_delay_rate_28d": changed}
    first = report.examples[0]
    assert first["column"] == "plane_delay_rate_28d" and first["served"] == 0.5 and first["key"] == "k0001"
    assert first["training"] == pytest.approx(training.loc[1, "plane_delay_rate_28d"])
    if not passed:
        assert "plane_delay_rate_28d 2" in report.describe()


def test_missing_values_equal_only_missing_values():
    training, served = frames(4)
    key = served["flight_id"]
    served["plane_delay_rate_28d"] = np.nan            # training: NaN only in row k0000
    served["plane_flights_28d"] = pd.Series([np.nan, 1.0, 2.0, 3.0])[::-1].to_numpy()  # a value where NA was
    training["plane_flights_28d"] = pd.array([pd.NA, 1, 2, pd.NA], dtype="Int64")
    served["tailnum"] = np.where(key == "k0002", None, training.set_index("flight_id").loc[key, "tailnum"])
    served["plane_valid_from"] = pd.NaT
    report = compare(training, served)
    assert report.column_mismatches == {
        "plane_delay_rate_28d": 3,   # NaN == NaN in k0000; NaN vs a value in the three others
        "plane_valid_from": 3,       # NaT == NaT in k0000 (row 0 of every 13th)
        "plane_flights_28d": 1,      # NA (Int64) == NaN (float) in k0000; 3.0 vs NA in k0003
        "tailnum": 1,                # None vs "N2"
    }
    assert {"key": "k0002", "column": "tailnum", "served": None, "training": "N2"} in report.examples
    assert not report.passed and report.rows_mismatched == 3


def test_floats_within_relative_tolerance_integers_exactly():
    a = pd.Series([1.0, 1e6, 0.0, 1_000_000_000_000])
    b = pd.Series([1.0 + 1e-12, 1e6 * (1 + 1e-6), 1e-300, 1_000_000_000_001])
    assert skew.values_equal(a, b).tolist() == [True, False, False, True]  # float vs float: 1e-12 relative is equal
    ints = pd.Series([1_000_000_000_000], dtype="Int64")
    assert not skew.values_equal(ints, pd.Series([1_000_000_000_001], dtype="int64"))[0]  # ints: exact
    assert skew.values_equal(pd.Series([True, False, None], dtype="boolean"), pd.Series([1.0, 0.0, np.nan])).all()
    # a column turned to text on one side: equal only if the text is the same number
    assert skew.values_equal(pd.Series(["3", "x"], dtype=object), pd.Series([3.0, 3.0])).tolist() == [False, False]
    assert skew.values_equal(pd.Series(["3", "4"], dtype=object), pd.Series([3, 4])).tolist() == [True, True]
    # instants: naive taken as UTC, any unit
    naive = pd.Series(pd.to_datetime(["2013-01-01 10:00"]))
    assert skew.values_equal(naive, pd.Series(pd.to_datetime(["2013-01-01 10:00"], utc=True)).dt.as_unit("us"))[0]


def test_rows_match_on_key_and_cutoff_and_nothing_compared_passes():
    training, served = frames()
    other_day = served.assign(prediction_cutoff=CUTOFF - pd.Timedelta(days=1), plane_delay_rate_28d=0.5)
    report = compare(training, other_day)
    assert report.rows_compared == 0 and report.passed and "nothing compared" in report.describe()
    never = compare(training, pd.DataFrame(columns=["partition_date", "flight_id", "prediction_cutoff",
                                                   "model_version", "run_id"]))  # nothing scored yet
    assert never.rows_compared == 0 and never.passed
    # Served rows of other entities do not count; only the matched ones are compared.
    half = compare(training.iloc[: N // 2], served)
    assert half.rows_compared == N // 2 and half.rows_served == N


# ---------------------------------------------------------------------------------------------------------------
# The real path: scoring stores what it served; the training set's check compares with it.
def _served(s: dict, day: dt.date) -> pd.DataFrame:
    with s["connect"](read_only=True) as con:
        return con.sql(f"SELECT * FROM {scoring.served_features_table(s['spec'])} WHERE partition_date = "
                       f"DATE '{day}' ORDER BY flight_id").df()


def _training_set_checks(s: dict) -> dict[str, dg.AssetCheckEvaluation]:
    from batch_platform.defs.resources import build_resources
    from batch_platform.defs.training.assets import build_training_set_asset

    result = dg.materialize([build_training_set_asset(s["spec"])], resources=build_resources(),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_scoring_stores_the_served_features_and_the_training_set_check_compares_them(scoring_env):
    s = scoring_env
    spec = s["spec"]
    # The last day of the training set's test window (its labels are final at the default training cutoff).
    from batch_platform.defs.training.assets import default_training_cutoff

    with s["connect"](read_only=True) as con:
        day = spec.split_days(default_training_cutoff(con))["test"][1]
    result = _score(s, day)
    predictions, served = _stored(s, day), _served(s, day)
    views = s["client"].service_views(spec.feature_service)
    assert list(served.columns) == scoring.served_meta_columns(spec) + scoring.served_feature_columns(spec, views)
    assert {"tailnum", "carrier", "sched_dep_hour", "plane_delay_rate_28d", "wx_valid_from"} <= set(served.columns)
    assert list(served["flight_id"]) == list(predictions["flight_id"]) and len(served) == result.rows > 500
    assert (served["run_id"] == result.run_id).all() and (served["model_version"] == result.champion_version).all()
    assert (served["prediction_cutoff"] == pd.Timestamp(spec.prediction_cutoff(day))).all()
    # The stored values are those the model was scored with: their hash is the prediction's feature fingerprint.
    champion = scoring.pin_models(s["registry"], spec)[0]
    assert (scoring.feature_fingerprints(served, champion.features) == predictions["feature_fingerprint"]).all()

    # The training set's rows of that day hold the same values: the check compares them and passes.
    checks = _training_set_checks(s)
    ok = checks["training_serving_skew"]
    assert ok.passed, ok.description
    assert ok.metadata["rows_compared"].value > 300 and ok.metadata["rows_mismatched"].value == 0

    # A served value that no longer matches what training sees (1 % of the rows): the blocking check fails and
    # names the column.
    with s["connect"]() as con:
        changed = con.execute(
            f"UPDATE {scoring.served_features_table(spec)} SET plane_flights_28d = plane_flights_28d + 1 "
            "WHERE partition_date = ? AND plane_flights_28d IS NOT NULL AND hash(flight_id) % 100 = 0 "
            f"AND flight_id IN (SELECT flight_id FROM marts.flight_labels WHERE {spec.label.sql} IS NOT NULL)",
            [day]).fetchall()[0][0]
    assert changed > 3
    bad = _training_set_checks(s)["training_serving_skew"]
    assert not bad.passed and bad.metadata["columns"].value == {"plane_flights_28d": changed}
    assert bad.metadata["rows_mismatched"].value == changed

