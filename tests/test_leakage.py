"""The leakage check itself (pure): it passes an honest frame and names each kind of leak."""

import datetime as dt

import pandas as pd

from batch_platform.lib.leakage import check_training_set

UTC = dt.UTC
T = dt.datetime(2013, 3, 1, 11, tzinfo=UTC)


def frame(**overrides):
    cut = pd.Timestamp("2013-02-20 23:00", tz="UTC")
    df = pd.DataFrame({
        "flight_id": ["a", "b", "c"],
        "event_timestamp": [cut] * 3,
        "label_final_at": [pd.Timestamp("2013-02-23 11:00", tz="UTC")] * 3,
        "plane_valid_from": [cut - pd.Timedelta(hours=17), cut, pd.NaT],  # exactly at the cutoff is fine
        "wx_valid_from": [cut - pd.Timedelta(hours=1)] * 3,
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def test_honest_frame_passes():
    report = check_training_set(frame(), T, key="flight_id")
    assert report.passed, report.describe()
    assert report.valid_from_columns == ["plane_valid_from", "wx_valid_from"]


def test_feature_valid_after_cutoff_fails():
    late = pd.Timestamp("2013-02-21 11:00", tz="UTC")
    report = check_training_set(frame(wx_valid_from=[late, late - pd.Timedelta(days=1), late]), T, key="flight_id")
    assert not report.passed
    assert report.feature_violations == {"wx_valid_from": 2}
    assert "a: wx_valid_from" in report.examples[0]


def test_label_not_final_at_training_cutoff_fails():
    df = frame()
    df.loc[1, "label_final_at"] = T + dt.timedelta(seconds=1)
    report = check_training_set(df, T, key="flight_id")
    assert not report.passed and report.label_violations == 1


def test_no_valid_from_columns_cannot_pass():
    report = check_training_set(frame().drop(columns=["plane_valid_from", "wx_valid_from"]), T, key="flight_id")
    assert not report.passed and "cannot prove" in report.describe()
