"""The publication-time leakage check: passes on the shipped build, fails on a back-dated feature row."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest

from batch_platform import settings
from batch_platform.defs.feature_store.assets import PUBLICATION_CHECK
from batch_platform.lib import warehouse
from batch_platform.lib.publication_check import check_feature_tables
from batch_platform.lib.specs import load_specs
from batch_platform.lib.time_model import load_time_model


def _check(on_platform, features_dir):
    with warehouse.connect(on_platform["env"][settings.WAREHOUSE_VAR], read_only=True) as con:
        return check_feature_tables(con, features_dir, load_time_model(), list(load_specs().values()))


def test_the_shipped_build_passes(on_platform):
    evals = [e for e in on_platform["features_result"].get_asset_check_evaluations()
             if e.check_name == PUBLICATION_CHECK]
    assert len(evals) == 1 and evals[0].passed, evals[0].description if evals else "no evaluation"
    report = _check(on_platform, on_platform["env"][settings.FEATURES_VAR])
    assert report.passed, report.describe()
    assert {t.table for t in report.tables} == set(load_time_model().spec.features)
    assert all(t.rows > 0 for t in report.tables)


def _rewrite(src, dst, sql):
    """The feature dataset ``src`` (a folder) rewritten as the folder ``dst`` holding one file."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = con.sql(f"SELECT * REPLACE ({sql}) FROM read_parquet('{src}')").to_arrow_table()
    finally:
        con.close()
    shutil.rmtree(dst)
    dst.mkdir()
    pq.write_table(table, dst / "data.parquet")


def _rows(src) -> int:
    with duckdb.connect() as con:
        return con.execute(f"SELECT count(*) FROM read_parquet('{src}')").fetchall()[0][0]


@pytest.mark.parametrize("table, back_dating, expected", [
    # one row of one plane, one hour early
    ("plane_daily_features",
     "CASE WHEN tailnum = (SELECT min(tailnum) FROM read_parquet('{src}')) AND as_of_date = "
     "(SELECT min(as_of_date) FROM read_parquet('{src}')) THEN feature_ts - INTERVAL 1 HOUR ELSE feature_ts END",
     1),
    # outcome features valid when published instead of when final (one day early): every row
    ("route_daily_features", "feature_ts - INTERVAL 1 DAY", "all"),
    # weather valid one hour after the last observation, as if it were an hourly feed: every row
    ("origin_weather_features", "obs_ts + INTERVAL 1 HOUR", "all"),
])
def test_a_back_dated_feature_fails(on_platform, tmp_path, table, back_dating, expected):
    features = on_platform["env"][settings.FEATURES_VAR]
    copy = tmp_path / "features"
    shutil.copytree(features, copy)
    src = features / table
    _rewrite(src, copy / table, f"{back_dating.format(src=src)} AS feature_ts")
    report = _check(on_platform, copy)
    assert not report.passed
    bad = {t.table: t for t in report.tables if not t.passed}
    assert set(bad) == {table}, report.describe()
    rows = _rows(src)
    assert bad[table].early_rows == (rows if expected == "all" else expected), report.describe()
    assert table in report.describe() and bad[table].examples


def test_a_feature_row_without_its_batch_fails(on_platform, tmp_path):
    """A feature row of a day whose raw batch was never loaded cannot be backed by any publication."""
    features = on_platform["env"][settings.FEATURES_VAR]
    copy = tmp_path / "features"
    shutil.copytree(features, copy)
    src = features / "carrier_daily_features"
    _rewrite(src, copy / "carrier_daily_features",
             "as_of_date + INTERVAL 60 DAY AS as_of_date, feature_ts + INTERVAL 60 DAY AS feature_ts")
    report = _check(on_platform, copy)
    (bad,) = [t for t in report.tables if not t.passed]
    assert bad.table == "carrier_daily_features" and bad.unbacked_rows == _rows(src)
    assert dt.date.today().year > 2013  # the shifted days are still 2013 days: no batch of them is loaded
