"""Raw assets materialized in-process on real landed days: idempotent reloads, and bad batches that are
rejected with a named error, quarantined with their reason, and lose nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import pytest

from batch_platform import settings
from batch_platform.defs.ingest.assets import raw_daily_assets, raw_reference_assets
from batch_platform.defs.resources import build_resources
from batch_platform.lib import warehouse
from batch_platform.lib.contracts import ALL_CONTRACTS, FLIGHTS
from batch_platform.lib.landing import daily_batch_path
from tests.bad_batches import FLIGHTS_FAULTS

D1, D2, D3 = (dt.date(2013, 1, d) for d in (1, 2, 3))


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


@pytest.mark.parametrize("fault", sorted(FLIGHTS_FAULTS))
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


def test_missing_batch_fails_without_quarantine(platform_env, instance):
    result = materialize_day(dt.date(2013, 3, 1), instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "MissingBatchError" in failure.step_failure_data.user_failure_data.description
    assert not platform_env["quarantine"].exists()
