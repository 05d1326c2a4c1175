"""Any declared table is landed, validated and ingested from its contract alone: a Parquet daily table and a CSV
snapshot that exist only in test data, through the lib (``write_batch`` -> ``ingest_batch``) and through the
Dagster definitions generated for them (raw assets, freshness policies, the arrival sensor), in a process whose
``BATCH_PLATFORM_SOURCES`` names their folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
import yaml

from batch_platform.lib import validation as v
from batch_platform.lib import warehouse
from batch_platform.lib.batch_files import batch_path, manifest_path, write_batch
from batch_platform.lib.contracts import SOURCES_DIR, SOURCES_VAR, load_contracts
from batch_platform.lib.ingest import ingest_batch
from batch_platform.lib.time_model import load_time_model

ROOT = Path(__file__).resolve().parent.parent
PARIS = dt.timezone(dt.timedelta(hours=1))  # January: CET

METERS = {
    "table": "meters", "version": "1", "kind": "snapshot", "description": "Electricity meters.",
    "published": {"day_offset": -1, "local_time": "05:00"},
    "columns": [{"name": "meter", "type": "VARCHAR", "nullable": False, "description": "Meter id."},
                {"name": "district", "type": "VARCHAR", "description": "Where it is."}],
    "key": ["meter"],
}
READINGS = {
    "table": "readings", "version": "1", "kind": "daily", "format": "parquet",
    "description": "Hourly meter readings, landed daily by local date.",
    "published": {"day_offset": 1, "local_time": "04:30"}, "final": {"day_offset": 3, "local_time": "04:30"},
    "columns": [
        {"name": "meter", "type": "VARCHAR", "nullable": False, "description": "Meter id."},
        {"name": "year", "type": "BIGINT", "nullable": False, "min": 2000, "max": 2100, "description": "Local year."},
        {"name": "month", "type": "BIGINT", "nullable": False, "min": 1, "max": 12, "description": "Local month."},
        {"name": "day", "type": "BIGINT", "nullable": False, "min": 1, "max": 31, "description": "Local day."},
        {"name": "read_at", "type": "TIMESTAMPTZ", "nullable": False, "description": "The hour read."},
        {"name": "kwh", "type": "DOUBLE", "min": 0, "max": 1000, "description": "Energy in the hour."},
    ],
    "key": ["meter", "read_at"],
    "partitioning": {"date_columns": ["year", "month", "day"], "instant_column": "read_at",
                     "timezone": "Europe/Paris"},
    "references": [{"column": "meter", "table": "meters", "key": "meter"}],
    "row_rules": [{"name": "kwh_not_absurd", "predicate": "kwh < 100 OR meter LIKE 'bulk%'",
                   "description": "Household meters read under 100 kWh an hour."}],
}


TRIPS = {
    "table": "trips", "version": "1", "kind": "daily", "description": "Taxi trips, landed by local date.",
    "published": {"day_offset": 1, "local_time": "02:00"},
    "columns": [{"name": "trip_id", "type": "BIGINT", "nullable": False, "description": "Trip id."},
                {"name": "trip_date", "type": "DATE", "nullable": False, "description": "Local date."},
                {"name": "fare", "type": "DOUBLE", "min": 0, "max": 10000, "description": "Fare paid."}],
    "key": ["trip_id"],
    "partitioning": {"date_columns": ["trip_date"], "timezone": "America/New_York"},
}


def test_a_table_partitioned_by_one_date_column(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "trips.yaml").write_text(yaml.safe_dump(TRIPS))
    trips = load_contracts(folder)["trips"]
    day = dt.date(2013, 1, 15)
    rows = pa.table({"trip_id": [1, 2], "trip_date": [day, day], "fare": [9.5, None]})
    published = dt.datetime(2013, 1, 16, 2, tzinfo=dt.UTC)
    path, _ = write_batch(tmp_path / "landing", trips, rows, day, published_at=published)
    with v.validate_batch(path, trips, day) as batch:
        assert batch.row_count == 2 and batch.data.column("trip_date").to_pylist() == [day, day]
    stray = pa.table({"trip_id": [1, 2], "trip_date": [day, day + dt.timedelta(days=1)], "fare": [9.5, 3.0]})
    path, _ = write_batch(tmp_path / "landing", trips, stray, day, published_at=published)
    with pytest.raises(v.OutsidePartitionError):
        v.validate_batch(path, trips, day)


def _sources(folder: Path, *, with_flights: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if with_flights:
        for path in SOURCES_DIR.glob("*.yaml"):
            shutil.copy(path, folder / path.name)
    for doc in (METERS, READINGS):
        (folder / f"{doc['table']}.yaml").write_text(yaml.safe_dump(doc))
    return folder


def _readings(day: dt.date, meters=("m1", "m2", "bulk9")) -> pa.Table:
    hours = [dt.datetime.combine(day, dt.time(h), PARIS).astimezone(dt.UTC) for h in range(24)]
    rows = [(m, day.year, day.month, day.day, t, 0.5 + i + (200.0 if m.startswith("bulk") else 0.0))
            for m in meters for i, t in enumerate(hours)]
    names = ["meter", "year", "month", "day", "read_at", "kwh"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def _meters() -> pa.Table:
    return pa.table({"meter": ["m1", "m2", "bulk9"], "district": ["north", None, "port"]})


@pytest.fixture
def declared(tmp_path):
    return load_contracts(_sources(tmp_path / "sources", with_flights=False))


def test_a_parquet_daily_table_and_a_csv_snapshot_land_and_load(tmp_path, declared):
    landing, db = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    day = dt.date(2013, 1, 15)
    published = dt.datetime(2013, 1, 16, 4, 30, tzinfo=PARIS)
    snap, wrote = write_batch(landing, declared["meters"], _meters(), None, published_at=published)
    path, _ = write_batch(landing, declared["readings"], _readings(day), day, published_at=published)
    assert wrote and snap == landing / "meters" / "snapshot.csv" and path == landing / "readings" / "2013-01-15.parquet"
    assert json.loads(manifest_path(path).read_text())["rows"] == 72
    # the same rows again: nothing rewritten
    assert write_batch(landing, declared["readings"], _readings(day), day, published_at=published)[1] is False

    now = dt.datetime(2013, 1, 20, tzinfo=dt.UTC)
    common = dict(quarantine_dir=tmp_path / "quarantine", archive_dir=tmp_path / "batches", now=now)
    ingest_batch(db, declared["meters"], snap, None, **common)
    result = ingest_batch(db, declared["readings"], path, day, **common)
    assert result.load.rows == 72 and result.batch.archived_path.suffix == ".parquet"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), round(sum(kwh), 1) FROM raw.readings").fetchall() == [(72, 5664.0)]
        # the manifest's publication time, and final by the contract's rule: D+3 04:30 in the time model's zone
        (published_at, final_at), = con.execute(
            f"SELECT published_at, final_at FROM {warehouse.LOADS_TABLE} WHERE table_name = 'raw.readings'"
        ).fetchall()
        assert published_at == published
        assert final_at == dt.datetime(2013, 1, 18, 4, 30, tzinfo=ZoneInfo(load_time_model().spec.timezone))


def _rejected(tmp_path, declared, rows: pa.Table) -> v.BatchRejected:
    day = dt.date(2013, 1, 15)
    path, _ = write_batch(tmp_path / "landing", declared["readings"], rows, day,
                          published_at=dt.datetime(2013, 1, 16, 4, 30, tzinfo=PARIS))
    with pytest.raises(v.BatchRejected) as raised:
        v.validate_batch(path, declared["readings"], day)
    return raised.value


@pytest.mark.parametrize("change, error", [
    (lambda t: t.set_column(5, "kwh", pa.array(["lots"] * t.num_rows)), v.ColumnTypeError),
    (lambda t: t.set_column(0, "meter", pa.array(["NULL"] + ["m1"] * (t.num_rows - 1))), v.UndeclaredNullTokenError),
    (lambda t: t.set_column(5, "kwh", pa.array([150.0] * t.num_rows)), v.RowRuleViolation),
    (lambda t: t.set_column(5, "kwh", pa.array([-1.0] * t.num_rows)), v.ImpossibleValueError),
    (lambda t: t.set_column(3, "day", pa.array([16] * t.num_rows)), v.OutsidePartitionError),
])
def test_a_bad_parquet_batch_is_rejected_by_name(tmp_path, declared, change, error):
    rows = _readings(dt.date(2013, 1, 15), meters=("m1",))
    assert type(_rejected(tmp_path, declared, change(rows))) is error


def test_a_parquet_batch_that_is_not_parquet_or_lacks_a_column(tmp_path, declared):
    day = dt.date(2013, 1, 15)
    published = dt.datetime(2013, 1, 16, 4, 30, tzinfo=PARIS)
    path, _ = write_batch(tmp_path / "landing", declared["readings"], _readings(day), day, published_at=published)
    manifest_path(path).unlink()  # (a file as written by hand: no manifest to vouch for it)
    path.write_bytes(b"meter,year\nm1,2024\n")
    with pytest.raises(v.BatchRejected) as raised:
        v.validate_batch(path, declared["readings"], day, require_manifest=False)
    assert type(raised.value) is v.CorruptBatchError and "Parquet" in str(raised.value)
    with duckdb.connect() as con:
        con.register("t", _readings(day).drop_columns(["kwh"]))
        con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    with pytest.raises(v.MissingColumnError):
        v.validate_batch(path, declared["readings"], day, require_manifest=False)
    with pytest.raises(ValueError, match="undeclared column"):
        write_batch(tmp_path / "landing", declared["readings"], _readings(day).append_column("x", pa.array([1] * 72)),
                    day, published_at=published)
    assert batch_path(tmp_path, declared["meters"], None).name == "snapshot.csv"


GENERATED = """
import datetime as dt, json, sys
from pathlib import Path
import dagster as dg
from batch_platform.definitions import defs as lazy
from batch_platform.defs.ingest.sensors import ARRIVAL_SENSOR
defs = lazy()
keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "raw")
graph = defs.resolve_asset_graph()
policies = {k: graph.get(dg.AssetKey(k.split("/"))).metadata.get("freshness_policy") for k in keys}
with dg.instance_for_test() as instance:
    sensor = defs.resolve_sensor_def(ARRIVAL_SENSOR)
    now = dt.datetime(2013, 1, 20, tzinfo=dt.timezone.utc)  # (days are partitions on the replay clock: 2013)
    ctx = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    import time_machine
    with time_machine.travel(now):
        result = sensor(ctx)
    requests = [(r.partition_key, sorted(k.to_user_string() for k in r.asset_selection)) for r in result.run_requests]
    loaded = []
    for r in result.run_requests:
        job = defs.resolve_implicit_global_asset_job_def()
        with time_machine.travel(now):
            run = job.execute_in_process(instance=instance, partition_key=r.partition_key,
                                         asset_selection=list(r.asset_selection), tags=r.tags)
        loaded.append(run.success)
print(json.dumps({"keys": keys, "policies": policies, "requests": requests, "loaded": loaded}))
"""


def test_declared_tables_get_raw_assets_freshness_and_arrivals(tmp_path):
    """The definitions of a platform whose sources folder holds the flights contracts and two more tables: raw
    assets, freshness policies and the arrival sensor cover the new tables too, and their landed batches load."""
    sources = _sources(tmp_path / "sources", with_flights=True)
    declared = load_contracts(sources)
    landing = tmp_path / "data" / "landing"
    day = dt.date(2013, 1, 15)
    published = dt.datetime(2013, 1, 16, 4, 30, tzinfo=PARIS)
    write_batch(landing, declared["meters"], _meters(), None, published_at=published)
    write_batch(landing, declared["readings"], _readings(day), day, published_at=published)
    from tests.conftest import platform_env_vars

    env = {**os.environ, **{k: str(p) for k, p in platform_env_vars(tmp_path).items()}, SOURCES_VAR: str(sources)}
    env.pop("BATCH_PLATFORM_MODEL_SPECS")  # the shipped specs
    out = subprocess.run([sys.executable, "-c", GENERATED], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"raw/readings", "raw/meters", "raw/flights", "raw/planes"} <= set(got["keys"])
    # the freshness policy from the contract's publication time (worded; in force on the live clock)
    assert "loaded within 2 h of its publication (04:30 America/New_York, the morning after its day): FAIL from " \
        "06:30" in got["policies"]["raw/readings"]
    assert "(06:00 America/New_York, the morning after its day)" in got["policies"]["raw/flights"]
    assert sorted(got["requests"], key=str) == [["2013-01-15", ["raw/readings"]], [None, ["raw/meters"]]]
    assert got["loaded"] == [True, True]
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.readings").fetchall() == [(72,)]
