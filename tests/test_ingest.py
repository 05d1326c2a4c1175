"""Raw assets materialized in-process on real landed days: idempotent reloads, and bad batches that are
rejected with a named error, quarantined with their reason, and lose nothing; the flight schedule, which lands a
day ahead of its flights, through the same path; and the CLI's ingest of a range of days."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from batch_platform import settings
from batch_platform.defs.ingest.assets import raw_daily_assets, raw_reference_assets
from batch_platform.defs.resources import build_resources
from batch_platform.lib import warehouse
from batch_platform.lib import validation as v
from batch_platform.lib.contracts import ALL_CONTRACTS, FLIGHT_SCHEDULE, FLIGHTS, SCHEDULE_COLUMNS
from batch_platform.lib.ingest import NOT_QUARANTINED
from batch_platform.lib.landing import daily_batch_path
from tests.bad_batches import FLIGHTS_FAULTS, read_rows, set_value, write_rows
from tests.conftest import FIRST_DAY as FIRST
from tests.conftest import LAST_DAY as LAST

D1, D2, D3, D4, D5 = (dt.date(2013, 1, d) for d in (1, 2, 3, 4, 5))
SCHEDULE_KEY = dg.AssetKey(["raw", "flight_schedule"])
SCHEDULE_ASSET = next(a for a in raw_daily_assets if a.key == SCHEDULE_KEY)


def materialize_day(day: dt.date | None, instance: dg.DagsterInstance, *, raise_on_error: bool = True):
    assets = raw_daily_assets if day else raw_reference_assets
    return dg.materialize(
        assets,
        partition_key=day.isoformat() if day else None,
        resources=build_resources(),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def snapshot(db, days=None) -> dict[str, tuple[int, str]]:
    """(rows, content checksum) of every raw table, or of only ``days``' partitions of the daily tables."""
    with warehouse.connect(db, read_only=True) as con:
        out = {}
        for c in ALL_CONTRACTS:
            if days is None or c.partitioning is None:
                n = con.execute(f"SELECT count(*) FROM {c.qualified_name}").fetchall()[0][0]
                out[c.qualified_name] = (n, warehouse.content_checksum(con, c))
            else:
                for day in days:
                    n = con.execute(f"SELECT count(*) FROM {c.qualified_name} WHERE _partition_date = ?",
                                    [day]).fetchall()[0][0]
                    out[f"{c.qualified_name}/{day}"] = (n, warehouse.content_checksum(con, c, day))
        return out


def materialize_schedule(day: dt.date, instance: dg.DagsterInstance, *, raise_on_error: bool = True):
    return dg.materialize([SCHEDULE_ASSET], partition_key=day.isoformat(), resources=build_resources(),
                          instance=instance, raise_on_error=raise_on_error)


@pytest.fixture
def instance(platform_env):
    with dg.instance_for_test(temp_dir=str(platform_env["dagster_home"])) as inst:
        yield inst


@pytest.fixture(scope="module")
def loaded_warehouse(tmp_path_factory, landed_days):
    """A warehouse with the reference snapshots and days D1, D2 loaded (built once per module)."""
    base = tmp_path_factory.mktemp("loaded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.WAREHOUSE_VAR, str(base / "warehouse.duckdb"))
        mp.setenv(settings.LANDING_VAR, str(landed_days))
        mp.setenv(settings.QUARANTINE_VAR, str(base / "quarantine"))
        mp.setenv(settings.ARCHIVE_VAR, str(base / "batches"))
        with dg.instance_for_test() as inst:
            for day in (None, D1, D2):
                materialize_day(day, inst)
    return base / "warehouse.duckdb"


@pytest.fixture
def loaded(platform_env, loaded_warehouse):
    shutil.copy(loaded_warehouse, platform_env["warehouse"])
    return platform_env


def test_materialization_records_rows_checksum_source_and_schema_version(loaded, instance):
    materialize_day(D2, instance)
    event = instance.get_latest_materialization_event(dg.AssetKey(["raw", "flights"]))
    md = event.asset_materialization.metadata
    assert event.asset_materialization.partition == D2.isoformat()
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM raw.flights WHERE _partition_date = ?", [D2]).fetchall()[0][0]
        checksum = warehouse.content_checksum(con, FLIGHTS, D2)
    assert md["dagster/row_count"].value == rows > 500
    assert md["checksum"].value == checksum
    assert md["source_file"].value == str(daily_batch_path(loaded["landing"], "flights", D2))
    assert md["schema_version"].value == FLIGHTS.schema_version


def test_the_checksum_computed_as_the_batch_is_validated_is_the_loaded_partitions(loaded, tmp_path):
    """Validation computes the checksum the rows will have (off the loading thread), for every table; the load
    records it only while it is the table's: a table with another column layout (an older warehouse) gets the one
    computed from it."""
    from batch_platform.lib.landing import reference_batch_path

    with warehouse.connect(tmp_path / "w.duckdb") as con:
        for contract in ALL_CONTRACTS:
            day = D3 if contract.partitioning is not None else None
            path = (daily_batch_path(loaded["landing"], contract.table, D3) if day
                    else reference_batch_path(loaded["landing"], contract.table))
            with v.validate_batch(path, contract, day) as batch:
                load = warehouse.load_batch(con, contract, batch.rows_path, partition=day, source_file=path,
                                            file_sha256=batch.file_sha256, checksum=batch.checksum)
                assert load.checksum == batch.checksum == warehouse.content_checksum(con, contract, day), contract
        path = daily_batch_path(loaded["landing"], "flights", D3)
        with v.validate_batch(path, FLIGHTS, D3) as batch:
            con.execute("ALTER TABLE raw.flights ADD COLUMN added_later INTEGER")
            load = warehouse.load_batch(con, FLIGHTS, batch.rows_path, partition=D3, source_file=path,
                                        file_sha256=batch.file_sha256, checksum=batch.checksum)
            assert load.checksum == warehouse.content_checksum(con, FLIGHTS, D3) != batch.checksum


def test_rerunning_a_day_leaves_the_warehouse_content_identical(loaded, instance):
    before = snapshot(loaded["warehouse"])
    materialize_day(D2, instance)
    materialize_day(D1, instance)
    materialize_day(None, instance)
    assert snapshot(loaded["warehouse"]) == before
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        dupes = con.execute(
            "SELECT count(*) FROM (SELECT year, month, day, carrier, flight, origin FROM raw.flights "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchall()[0][0]
    assert dupes == 0


def test_a_changed_batch_replaces_only_its_partition(loaded, instance):
    before = snapshot(loaded["warehouse"])
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        d1_before = warehouse.content_checksum(con, FLIGHTS, D1)
    from tests.bad_batches import read_rows, write_rows

    path = daily_batch_path(loaded["landing"], "flights", D2)
    header, rows = read_rows(path)
    write_rows(path, header, rows[:-10])  # upstream re-exports D2 with 10 flights fewer
    materialize_day(D2, instance)
    after = snapshot(loaded["warehouse"])
    assert after["raw.flights"][0] == before["raw.flights"][0] - 10
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        assert warehouse.content_checksum(con, FLIGHTS, D1) == d1_before


def test_a_correction_keeps_every_version_with_its_audit_trail(loaded, instance):
    """Upstream re-exports D2 with 10 flights fewer: the partition now holds the correction, and both versions are
    kept by content (sha256) with one load-history row each, in load order; the current version is the log's."""
    path = daily_batch_path(loaded["landing"], "flights", D2)
    materialize_day(D2, instance)  # the original version, loaded by this test's instance
    original = v.file_sha256(path)
    header, rows = read_rows(path)
    write_rows(path, header, rows[:-10])
    corrected = v.file_sha256(path)
    materialize_day(D2, instance)
    materialize_day(D2, instance)  # the same correction again: a load more, no new version

    archive = loaded["data"] / "batches" / "flights" / D2.isoformat()
    assert sorted(p.name for p in archive.iterdir()) == sorted([f"{original}.csv", f"{corrected}.csv"])
    assert v.file_sha256(archive / f"{corrected}.csv") == corrected  # the bytes that were validated and loaded
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        history = con.execute(
            f"SELECT file_sha256, rows, archived_path FROM {warehouse.LOAD_HISTORY_TABLE} "
            "WHERE table_name = 'raw.flights' AND partition_key = ? ORDER BY loaded_at", [D2.isoformat()]).fetchall()
        current = con.execute(f"SELECT file_sha256 FROM {warehouse.LOADS_TABLE} WHERE table_name = 'raw.flights' "
                              "AND partition_key = ?", [D2.isoformat()]).fetchall()
    history = history[-3:]  # before them: the module's warehouse loading D2
    assert [h[0] for h in history] == [original, corrected, corrected]
    assert history[0][1] == history[1][1] + 10
    assert history[0][2] == str(archive / f"{original}.csv")
    assert current == [(corrected,)]


@pytest.mark.parametrize("fault", sorted(f for f, (_, error) in FLIGHTS_FAULTS.items()
                                   if not issubclass(error, NOT_QUARANTINED)))
def test_bad_batch_fails_named_is_quarantined_and_loses_nothing(loaded, instance, fault):
    """D2 was loaded good; upstream re-delivers a bad D2: the run fails with the named error, the file moves
    to quarantine with the reason, and every loaded partition is unchanged."""
    mutate, expected = FLIGHTS_FAULTS[fault]
    before = snapshot(loaded["warehouse"], days=(D1, D2))
    flights_before = snapshot(loaded["warehouse"])["raw.flights"]
    for day in (D2,):
        path = daily_batch_path(loaded["landing"], "flights", day)
        mutate(path)
        result = materialize_day(day, instance, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        user = failure.step_failure_data.user_failure_data
        assert expected.__name__ in user.description
        assert user.metadata["error"].value == expected.__name__
        assert not path.exists(), "the bad batch must leave the landing zone"
        quarantined = user.metadata["quarantined_to"].value
        reason = json.loads(open(quarantined + ".reason.json").read())
        assert reason["error"] == expected.__name__ and reason["rule"] == expected.rule
        assert reason["original_path"] == str(path)
        assert snapshot(loaded["warehouse"], days=(D1, D2)) == before
        assert snapshot(loaded["warehouse"])["raw.flights"] == flights_before


@pytest.mark.parametrize("column,code", [("carrier", "ZZ"), ("dest", "XXX"), ("origin", "ZZZ")])
def test_codes_unknown_to_the_reference_tables_are_rejected_at_ingest(loaded, instance, column, code):
    """A carrier or airport the loaded reference snapshots do not know is rejected before the partition (and
    the labels built from it) change; the reference snapshots' documented gaps (dest SJU, …) are not."""
    before = snapshot(loaded["warehouse"], days=(D1, D2))
    path = daily_batch_path(loaded["landing"], "flights", D2)
    header, rows = read_rows(path)
    assert any(r[header.index("dest")] in ("SJU", "BQN", "PSE", "STT") for r in rows)  # known gaps: accepted
    rows[6][header.index(column)] = code
    write_rows(path, header, rows)
    result = materialize_day(D2, instance, raise_on_error=False)
    assert not result.success
    user = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert user.metadata["error"].value == "UnknownReferenceError" and code in user.description
    assert user.metadata["quarantined_to"].value and not path.exists()
    assert snapshot(loaded["warehouse"], days=(D1, D2)) == before
    assert not list((loaded["data"] / "batches" / "flights" / D2.isoformat()).glob("*.csv"))  # kept: loaded ones


def test_bad_new_day_loads_nothing_of_that_table(loaded, instance):
    """A new day arriving bad adds no flights; its good weather batch still loads (assets are independent)."""
    mutate, _ = FLIGHTS_FAULTS["duplicate_key"]
    before = snapshot(loaded["warehouse"], days=(D1, D2))
    flights_before = snapshot(loaded["warehouse"])["raw.flights"]
    mutate(daily_batch_path(loaded["landing"], "flights", D3))
    result = materialize_day(D3, instance, raise_on_error=False)
    assert not result.success
    assert snapshot(loaded["warehouse"])["raw.flights"] == flights_before
    assert snapshot(loaded["warehouse"], days=(D1, D2)) == before
    assert snapshot(loaded["warehouse"], days=(D3,))["raw.weather/2013-01-03"][0] == 72


def test_an_export_in_progress_is_not_ready_rather_than_bad(loaded, instance):
    """The file is there, its manifest (written after it) not yet: the run fails as *not ready*, nothing is
    quarantined, and the same file loads once the manifest arrives."""
    path = daily_batch_path(loaded["landing"], "flights", D3)
    mpath = Path(str(path) + ".manifest.json")
    manifest = mpath.read_bytes()
    mpath.unlink()
    result = materialize_day(D3, instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "ExportNotFinishedError" in failure.step_failure_data.user_failure_data.description
    assert path.exists() and not loaded["quarantine"].exists()
    mpath.write_bytes(manifest)
    assert materialize_day(D3, instance).success


def test_missing_batch_fails_without_quarantine(platform_env, instance):
    result = materialize_day(dt.date(2013, 3, 1), instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "MissingBatchError" in failure.step_failure_data.user_failure_data.description
    assert not platform_env["quarantine"].exists()


# ------------------------------------------------------------------------------------------------- the schedule


def test_schedule_partition_is_validated_and_equals_its_flights_projected(loaded, instance):
    materialize_day(D2, instance)
    md = instance.get_latest_materialization_event(SCHEDULE_KEY).asset_materialization.metadata
    cols = ", ".join(c for c in SCHEDULE_COLUMNS if c != "tailnum")  # the schedule publishes the planned tail
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        def only_in(a: str, b: str) -> int:
            return con.execute(
                f"SELECT count(*) FROM (SELECT {cols} FROM {a} WHERE _partition_date = $d "
                f"EXCEPT ALL SELECT {cols} FROM {b} WHERE _partition_date = $d)", {"d": D2}).fetchall()[0][0]

        assert only_in("raw.flights", "raw.flight_schedule") == only_in("raw.flight_schedule", "raw.flights") == 0
        # the flown tail where the source has one; a planned tail (never none) where it does not
        tails = con.execute(
            "SELECT count(*) FILTER (WHERE s.tailnum IS NULL), count(*) FILTER (WHERE f.tailnum IS NOT NULL AND "
            "s.tailnum <> f.tailnum), count(*) FILTER (WHERE f.tailnum IS NULL) FROM raw.flight_schedule s JOIN "
            "raw.flights f USING (year, month, day, carrier, flight, origin) WHERE s._partition_date = $d",
            {"d": D2}).fetchall()[0]
        assert tails[:2] == (0, 0) and tails[2] > 0
        rows = con.execute("SELECT count(*) FROM raw.flight_schedule WHERE _partition_date = ?", [D2]).fetchall()[0][0]
        checksum = warehouse.content_checksum(con, FLIGHT_SCHEDULE, D2)
        columns = [r[0] for r in con.execute("DESCRIBE raw.flight_schedule").fetchall()]
    assert md["dagster/row_count"].value == rows > 500
    assert md["checksum"].value == checksum
    assert md["schema_version"].value == FLIGHT_SCHEDULE.schema_version
    assert md["source_file"].value == str(daily_batch_path(loaded["landing"], "flight_schedule", D2))
    assert columns == [*SCHEDULE_COLUMNS, "_partition_date", "_batch_file", "_batch_sha256"]


def test_next_day_schedule_loads_alone_and_a_republished_one_replaces_its_partition(loaded, instance):
    """D5's schedule landed with flight days D1..D4: its partition loads before any flights of D5 exist; a
    re-published schedule replaces exactly that partition."""
    before = snapshot(loaded["warehouse"], days=(D1, D2))
    materialize_schedule(D5, instance)
    path = daily_batch_path(loaded["landing"], "flight_schedule", D5)
    _, rows = read_rows(path)
    with warehouse.connect(loaded["warehouse"], read_only=True) as con:
        assert warehouse.loaded_partitions(con, FLIGHTS) == [D1.isoformat(), D2.isoformat()]
        assert warehouse.loaded_partitions(con, FLIGHT_SCHEDULE) == [D1.isoformat(), D2.isoformat(), D5.isoformat()]
    header, rows = read_rows(path)
    write_rows(path, header, rows[:-10])  # upstream re-publishes D5's schedule with 10 flights fewer
    materialize_schedule(D5, instance)
    md = instance.get_latest_materialization_event(SCHEDULE_KEY).asset_materialization.metadata
    assert (md["rows_replaced"].value, md["dagster/row_count"].value) == (len(rows), len(rows) - 10)
    assert snapshot(loaded["warehouse"], days=(D1, D2)) == before


def unscheduled_clock_time(path) -> None:
    set_value(path, "sched_arr_time", "1275", row=3)  # 12:75 is in range but not a clock time


SCHEDULE_FAULTS = {
    **{name: FLIGHTS_FAULTS[name] for name in ("duplicate_key", "rows_outside_day", "broken_row_rule")},
    "clock_time_not_hhmm": (unscheduled_clock_time, v.RowRuleViolation),
}


@pytest.mark.parametrize("fault", sorted(SCHEDULE_FAULTS))
def test_bad_schedule_batch_fails_named_is_quarantined_and_loses_nothing(loaded, instance, fault):
    mutate, expected = SCHEDULE_FAULTS[fault]
    before = snapshot(loaded["warehouse"])
    path = daily_batch_path(loaded["landing"], "flight_schedule", D2)
    mutate(path)
    result = materialize_schedule(D2, instance, raise_on_error=False)
    assert not result.success
    user = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert user.metadata["error"].value == expected.__name__
    assert not path.exists()
    quarantined = user.metadata["quarantined_to"].value
    assert quarantined.startswith(str(loaded["quarantine"] / "flight_schedule"))
    reason = json.loads(open(quarantined + ".reason.json").read())
    assert reason["rule"] == expected.rule and reason["original_path"] == str(path)
    assert snapshot(loaded["warehouse"]) == before


def test_daily_batches_of_a_range_end_with_the_next_days_schedule():
    from batch_platform.lib.ingest import daily_batches

    def tables(start, end):
        return [(str(d), [c.table for c in cs]) for d, cs in daily_batches(start, end)]

    every = ["flights", "weather", "flight_schedule"]
    assert tables(D1, D2) == [(str(D1), every), (str(D2), every), (str(D3), ["flight_schedule"])]
    last = dt.date(2013, 12, 31)  # the data set's last day: no schedule of 2014-01-01
    assert tables(last, last) == [(str(last), every)]
    assert tables(D2, D1) == []


def test_ingest_range_loads_the_next_days_schedule_alone_and_skips_unchanged_batches(platform_env, instance):
    """`batch-platform ingest` of flight days D1..D2 runs one job over the range (every batch of both days) plus
    D3 with only the schedule selected; a rerun skips everything; extending the range to D3 loads only D3's flights and weather (its
    schedule is loaded unchanged) and D4's schedule. (The ingest stage's own jobs and resources: the code
    location as a whole is test_definitions' business.)"""
    from batch_platform.defs.ingest.assets import raw_daily_ingest_job, raw_reference_refresh_job
    from batch_platform.pipeline import ingest_range

    defs = dg.Definitions(assets=[*raw_daily_assets, *raw_reference_assets], resources=build_resources(),
                          jobs=[raw_daily_ingest_job, raw_reference_refresh_job])

    echoed: list[str] = []
    outcomes = ingest_range(defs, instance, D1, D2, echo=echoed.append)
    assert [(o.job, o.partition, o.success, o.skipped_reason) for o in outcomes] == [
        ("raw_reference_refresh", None, True, None),
        ("raw_daily_ingest", f"{D1}...{D2}", True, None), ("raw_daily_ingest", str(D3), True, None),
    ]

    def loaded_by(outcome) -> set[str]:
        events = instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        return {e.dagster_event.asset_key.path[-1] for e in events}

    every = {"flights", "weather", "flight_schedule"}
    assert [loaded_by(o) for o in outcomes[1:]] == [every, {"flight_schedule"}]
    events = instance.all_logs(outcomes[1].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert sorted((e.dagster_event.asset_key.path[-1], e.dagster_event.partition) for e in events) == sorted(
        (table, str(d)) for table in every for d in (D1, D2))  # each day of the range recorded as loaded
    assert echoed[-1] == f"  {D3}: loaded (flight_schedule)"
    with warehouse.connect(platform_env["warehouse"], read_only=True) as con:
        parts = {c.table: warehouse.loaded_partitions(con, c) for c in (FLIGHTS, FLIGHT_SCHEDULE)}
    assert parts == {"flights": [str(D1), str(D2)], "flight_schedule": [str(D1), str(D2), str(D3)]}

    again = ingest_range(defs, instance, D1, D2, echo=echoed.append)
    assert [o.skipped_reason for o in again] == ["unchanged"] * 4

    later = ingest_range(defs, instance, D1, D3, echo=echoed.append)
    assert [(o.partition, o.skipped_reason) for o in later] == [
        (None, "unchanged"), (str(D1), "unchanged"), (str(D2), "unchanged"), (str(D3), None), (str(D4), None)]
    assert [loaded_by(o) for o in later[3:]] == [{"flights", "weather"}, {"flight_schedule"}]
    assert all(o.success for o in later)


def test_ingest_many_loads_what_ingest_batch_loads_and_stops_at_a_rejected_batch(platform_env, tmp_path):
    """The backfill path (threads validate ahead, one warehouse connection) gives the same warehouse as one
    ingest_batch per batch; a bad batch in the middle is quarantined, the ones before it are loaded, none after."""
    from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS
    from batch_platform.lib.ingest import daily_batches, ingest_batch, ingest_many
    from batch_platform.lib.landing import reference_batch_path
    from tests.bad_batches import duplicate_key

    landing, q = platform_env["landing"], platform_env["quarantine"]
    items = [(c, reference_batch_path(landing, c.table), None) for c in REFERENCE_CONTRACTS]
    items += [(c, daily_batch_path(landing, c.table, d), d) for d, cs in daily_batches(FIRST, LAST) for c in cs]
    one_by_one, many = tmp_path / "one.duckdb", tmp_path / "many.duckdb"
    for c, path, day in items:
        ingest_batch(one_by_one, c, path, day, quarantine_dir=q)
    results = ingest_many(many, items, quarantine_dir=q, workers=2)
    assert [r.batch.path for r in results] == [path for _, path, _ in items]
    assert snapshot(many) == snapshot(one_by_one)

    bad_day = FIRST + dt.timedelta(days=1)
    duplicate_key(daily_batch_path(landing, "flights", bad_day))
    partial = tmp_path / "partial.duckdb"
    with pytest.raises(v.DuplicateKeyError) as err:
        ingest_many(partial, items, quarantine_dir=q)
    assert err.value.quarantined_to and not daily_batch_path(landing, "flights", bad_day).exists()
    loaded = snapshot(partial, days=[FIRST, bad_day])
    assert loaded[f"raw.flights/{FIRST}"] == snapshot(one_by_one, days=[FIRST])[f"raw.flights/{FIRST}"]
    assert loaded[f"raw.flights/{bad_day}"][0] == 0
    assert all(loaded[f"{c.qualified_name}/{bad_day}"][0] == 0 for c in DAILY_CONTRACTS)


# ------------------------------------------------------------------------------------------------- memory


def test_peak_memory_of_an_ingest_does_not_grow_with_the_batch(tmp_path):
    """Two flight days of 100 and 300 copies of a day's flights (98k and 293k rows), each ingested in a fresh
    process with DuckDB capped at 128MB (lower than the platform's cap, so that both batches exceed it): the larger
    batch peaks at about the same RSS, since the rows stream through DuckDB, which spills beyond the cap, and are
    never held in Python. (Uncapped, with the rows turned into an Arrow table, the peak grew ~90 MiB between the
    two.)"""
    import json
    import os
    import subprocess
    import sys

    from batch_platform.lib.landing import replay

    peaks = {}
    for scale in (100, 300):
        landing, report = tmp_path / f"landing-{scale}", tmp_path / f"report-{scale}.json"
        replay(landing, D2, D2, scale=scale, tables=["flights"])
        subprocess.run(
            [sys.executable, "-m", "bench.ingest_child", "flights", str(daily_batch_path(landing, "flights", D2)),
             D2.isoformat(), str(tmp_path / f"w-{scale}.duckdb"), str(tmp_path / "quarantine"), "--report",
             str(report), "--memory-limit", "128MB"],
            cwd=settings.REPO_ROOT, env={**os.environ, "PYTHONPATH": str(settings.REPO_ROOT)}, check=True,
            capture_output=True)
        result = json.loads(report.read_text())
        assert result["rows"] == scale * 943  # flights of 2013-01-02
        peaks[scale] = result["peak_rss_kib"] / 1024
    assert peaks[300] < peaks[100] + 60, f"peak RSS (MiB) by copies of the day: {peaks}"
