"""A whole table replayed as daily batches for any declared table (lib/table_replay.py): one batch per day with
rows, published when the contract says, re-dated by whole days with every date column consistent, and each batch
valid under its contract."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pyarrow as pa
import yaml

from batch_platform.lib import validation as v
from batch_platform.lib.batch_files import batch_path, manifest_path
from batch_platform.lib.contracts import load_contracts
from batch_platform.lib.table_replay import replay_snapshot, replay_table
from batch_platform.lib.time_model import load_time_model
from tests.test_declared_sources import METERS, READINGS, TRIPS

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def _contracts(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    for doc in (METERS, READINGS, TRIPS):
        (folder / f"{doc['table']}.yaml").write_text(yaml.safe_dump(doc))
    return load_contracts(folder)


def _readings(days: list[dt.date]) -> pa.Table:
    rows = []
    for day in days:
        for h in range(24):
            at = dt.datetime.combine(day, dt.time(h), PARIS)
            rows.append(("m1", day.year, day.month, day.day, at.astimezone(dt.UTC), float(h), "extra"))
    names = ["meter", "year", "month", "day", "read_at", "kwh", "not_in_the_contract"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_each_day_with_rows_is_one_batch_published_as_declared(tmp_path):
    contracts, tm = _contracts(tmp_path), load_time_model()
    readings = contracts["readings"]
    days = [dt.date(2013, 1, 14), dt.date(2013, 1, 15), dt.date(2013, 1, 17)]  # nothing on the 16th
    landing = tmp_path / "landing"
    got = replay_table(landing, readings, _readings(days), dt.date(2013, 1, 15), dt.date(2013, 1, 17), time_model=tm)
    assert got.days == (dt.date(2013, 1, 15), dt.date(2013, 1, 17)) and got.files_written == 2
    assert sorted(p.name for p in (landing / "readings").glob("*.parquet")) == ["2013-01-15.parquet",
                                                                                "2013-01-17.parquet"]
    manifest = json.loads(manifest_path(batch_path(landing, readings, dt.date(2013, 1, 15))).read_text())
    # published D+1 04:30 in the time model's zone (the contract's rule), 24 rows, the contract's columns only
    assert manifest["published_at"] == dt.datetime(2013, 1, 16, 4, 30, tzinfo=NEW_YORK).astimezone(
        dt.UTC).isoformat().replace("+00:00", "Z")
    assert manifest["rows"] == 24 and manifest["columns"] == readings.column_names
    for day in got.days:
        with v.validate_batch(batch_path(landing, readings, day), readings, day) as batch:
            assert batch.row_count == 24
    # again: the same bytes, nothing written
    assert replay_table(landing, readings, _readings(days), dt.date(2013, 1, 15), dt.date(2013, 1, 17),
                        time_model=tm).files_written == 0


def test_re_dated_by_whole_days_every_date_column_moves_together(tmp_path):
    contracts, tm = _contracts(tmp_path), load_time_model()
    readings, trips = contracts["readings"], contracts["trips"]
    landing = tmp_path / "landing"
    shift = (dt.date(2024, 1, 15) - dt.date(2013, 1, 15)).days
    got = replay_table(landing, readings, _readings([dt.date(2013, 1, 15)]), dt.date(2024, 1, 15),
                       dt.date(2024, 1, 15), time_model=tm, shift_days=shift)
    assert got.days == (dt.date(2024, 1, 15),)
    with v.validate_batch(batch_path(landing, readings, dt.date(2024, 1, 15)), readings,
                          dt.date(2024, 1, 15)) as batch:
        data = batch.data
        assert set(data.column("year").to_pylist()) == {2024} and set(data.column("day").to_pylist()) == {15}
        assert min(data.column("read_at").to_pylist()).astimezone(PARIS) == dt.datetime(2024, 1, 15, 0, 0,
                                                                                         tzinfo=PARIS)
    one_day = dt.date(2013, 3, 1)
    rows = pa.table({"trip_id": [1, 2], "trip_date": [one_day, one_day], "fare": [3.0, None]})
    got = replay_table(landing, trips, rows, dt.date(2024, 2, 1), dt.date(2024, 3, 31), time_model=tm,
                       shift_days=shift)
    assert got.days == (one_day + dt.timedelta(days=shift),) == (dt.date(2024, 2, 29),)  # a leap day, too
    with v.validate_batch(batch_path(landing, trips, got.days[0]), trips, got.days[0]) as batch:
        assert batch.data.column("trip_date").to_pylist() == [dt.date(2024, 2, 29)] * 2


def test_a_live_upstream_does_not_publish_ahead_and_a_snapshot_lands_once(tmp_path):
    contracts, tm = _contracts(tmp_path), load_time_model()
    landing = tmp_path / "landing"
    days = [dt.date(2013, 1, 14), dt.date(2013, 1, 15)]
    now = dt.datetime(2013, 1, 16, 9, tzinfo=dt.UTC)  # the 14th is published (15th 04:30 New York), the 15th at 09:30
    got = replay_table(landing, contracts["readings"], _readings(days), days[0], days[-1], time_model=tm, now=now)
    assert got.days == (dt.date(2013, 1, 14),)
    snap = replay_snapshot(landing, contracts["meters"], pa.table({"district": ["n"], "meter": ["m1"]}),
                           dt.date(2013, 1, 14), time_model=tm)
    assert snap.files_written == 1 and (landing / "meters" / "snapshot.csv").read_text() == "meter,district\nm1,n\n"
