"""Arrival-driven ingest: which landed batches are due, and the sensor that loads them."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import pytest

from batch_platform.lib.arrivals import due_batches
from batch_platform.lib.clock import REPLAY_CLOCK
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS
from batch_platform.lib.landing import daily_batch_path, manifest_path
from batch_platform.lib.time_model import load_time_model
from batch_platform.lib.validation import file_sha256
from tests.conftest import FIRST_DAY, LAST_DAY

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _due(landing, loaded=None, now=NOW):
    return due_batches(landing, daily=list(DAILY_CONTRACTS), reference=list(REFERENCE_CONTRACTS),
                       loaded=loaded or {}, now=now, time_model=load_time_model(), clock=REPLAY_CLOCK)


@pytest.fixture
def landing(tmp_path, landed_days):
    shutil.copytree(landed_days, tmp_path / "landing")
    return tmp_path / "landing"


def test_complete_published_unloaded_batches_are_due(landing):
    due, skipped = _due(landing)
    days = (LAST_DAY - FIRST_DAY).days + 1
    by_table = {t: sorted(a.partition_key for a in due if a.table == t) for t in {a.table for a in due}}
    assert len(by_table["flights"]) == len(by_table["weather"]) == days
    assert len(by_table["flight_schedule"]) == days + 1  # the schedule of the day after: its own partition
    assert by_table["planes"] == ["__all__"] and not skipped
    # loaded with these bytes: nothing is due, and no file is hashed for it
    loaded = {(a.table, a.partition_key): a.sha256 for a in due}
    assert _due(landing, loaded) == ([], [])


def test_a_correction_is_due_again_a_partial_or_future_batch_is_not(landing):
    due, _ = _due(landing)
    loaded = {(a.table, a.partition_key): a.sha256 for a in due}
    # a correction: new bytes and a new manifest for one day of flights
    path = daily_batch_path(landing, "flights", LAST_DAY)
    data = path.read_bytes().replace(b",UA,", b",AA,", 1)
    path.write_bytes(data)
    m = json.loads(manifest_path(path).read_text())
    manifest_path(path).write_text(json.dumps({**m, "sha256": file_sha256(path)}))
    (fixed,), skipped = _due(landing, loaded)
    assert (fixed.table, fixed.partition, fixed.sha256) == ("flights", LAST_DAY, file_sha256(path)) and not skipped
    assert fixed.run_key_part != f"flights@{LAST_DAY}={loaded[('flights', LAST_DAY.isoformat())]}"
    # a file still being written (bytes differ from its manifest) waits
    path.write_bytes(data[: len(data) // 2])
    due, skipped = _due(landing, loaded)
    assert not due and "still arriving" in skipped[0].reason
    # a batch whose manifest says it is published later than now waits too
    path.write_bytes(data)
    manifest_path(path).write_text(json.dumps({**m, "sha256": file_sha256(path),
                                               "published_at": "2026-12-01T11:00:00Z"}))
    due, skipped = _due(landing, loaded)
    assert not due and "after now" in skipped[0].reason
    assert [a.table for a in _due(landing, loaded, now=NOW + dt.timedelta(hours=12))[0]] == ["flights"]


def test_sensor_catches_up_in_one_backfill_then_requests_each_arrival_once(defs, platform_env):
    """A first start sees several days at once: one backfill (run per table over the range, the raw assets'
    single-run policy), not a run per day; the cursor keeps it from being requested again while it loads. Later
    arrivals are one run per day with a run key naming table, partition and sha256."""
    from batch_platform.defs.ingest.sensors import ARRIVAL_SENSOR, TAG_CATCH_UP
    from batch_platform.defs.resources import build_resources
    from tests.requests import execute_request

    sensor = defs.resolve_sensor_def(ARRIVAL_SENSOR)
    with dg.instance_for_test() as instance:
        cursor = None

        def tick(restart: bool = False):
            nonlocal cursor
            data = sensor.evaluate_tick(dg.build_sensor_context(
                instance=instance, cursor=None if restart else cursor, resources=build_resources(),
                repository_def=defs.get_repository_def()))
            cursor = data.cursor
            return data

        (backfill,) = tick().run_requests
        subset = backfill.asset_graph_subset
        assert subset is not None and backfill.tags[TAG_CATCH_UP] == "true"
        days = (LAST_DAY - FIRST_DAY).days + 1
        parts = {k.path[-1]: sorted(p.get_partition_keys()) for k, p in subset.partitions_subsets_by_asset_key.items()}
        assert len(parts["flights"]) == len(parts["weather"]) == days  # and each day's schedule, and the next day's
        assert parts["flight_schedule"][-1] == (LAST_DAY + dt.timedelta(days=1)).isoformat()
        assert {k.path[-1] for k in subset.non_partitioned_asset_keys} == {"planes", "airports", "airlines"}
        waiting = tick()  # the backfill is loading: not requested twice
        assert not waiting.run_requests and "still loading" in waiting.skip_message
        results = execute_request(defs, instance, backfill)
        assert len(results) == 3 and all(r.success for r in results)  # snapshots; flights + weather; schedules
        assert len(instance.get_materialized_partitions(dg.AssetKey(["raw", "flights"]))) == days
        nothing = tick()
        assert not nothing.run_requests and "nothing new" in nothing.skip_message
        assert not tick(restart=True).run_requests  # a restarted sensor reads the load log, not its cursor
        # one corrected file: one run, for its table and day only, without the dbt source tests (feature build's)
        path = daily_batch_path(platform_env["landing"], "weather", FIRST_DAY)
        data = path.read_bytes()
        path.write_bytes(data)  # the same bytes re-landed: still nothing
        assert not tick().run_requests
        lines = data.decode().splitlines(keepends=True)
        path.write_bytes("".join(lines[:-1]).encode())  # the corrected export drops its last row
        m = json.loads(manifest_path(path).read_text())
        manifest_path(path).write_text(json.dumps({**m, "sha256": file_sha256(path), "rows": m["rows"] - 1}))
        (again,) = tick().run_requests
        assert again.partition_key == FIRST_DAY.isoformat() and again.asset_check_keys == []
        assert again.asset_selection == [dg.AssetKey(["raw", "weather"])]
        assert again.run_key == f"arrival:weather@{FIRST_DAY}={file_sha256(path)}"
        (result,) = execute_request(defs, instance, again)
        assert result.success and not result.get_asset_check_evaluations()
        assert not tick().run_requests
