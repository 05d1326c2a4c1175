"""Arrival-driven ingest: a sensor on the landing zone that loads each batch once it is complete and published.

Every tick lists the landing zone's manifests (:func:`batch_platform.lib.arrivals.due_batches`): a batch whose
manifest matches its file, whose publication time has passed and which the load log does not hold with these bytes
is requested, per partition, as a run selecting only the due tables of that day (the schedule of tomorrow
included: it is a partition of its own); reference snapshots as a run of their own.
The run key names every batch with its sha256: a correction (new bytes) is loaded again, a duplicate tick is not.
More than two days due at once (a first start, the end of an outage) become one catch-up backfill, which the raw
assets' single-run backfill policy executes as one run per table rather than a run per day; the sensor's cursor
remembers what it requested until the load log has it, so a tick does not request it twice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._time import get_current_datetime

from batch_platform import settings
from batch_platform.defs.ingest.assets import RAW_GROUP
from batch_platform.defs.monitoring.automation import default_status
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.resources import LandingZoneResource, WarehouseResource
from batch_platform.lib import warehouse as warehouse_lib
from batch_platform.lib.arrivals import Arrival, due_batches
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS
from batch_platform.lib.time_model import load_time_model

ARRIVAL_SENSOR = "landing_arrivals"
TAG_BATCHES = "batch_platform/arrived_batches"
TAG_CATCH_UP = "batch_platform/catch_up"
LOCK_WAIT_S = 5.0  # a busy warehouse postpones the tick instead of holding the sensor
CATCH_UP_DAYS = 2
"""A normal morning brings batches of two days (yesterday's flights and weather, tomorrow's schedule); more days
than this are a catch-up."""


def loaded_batches(db_path: Path) -> dict[tuple[str, str], str]:
    """(table, partition key) -> sha256 of the loaded file, from the warehouse's load log."""
    if not db_path.exists():
        return {}
    with warehouse_lib.connect(db_path, read_only=True, timeout_s=LOCK_WAIT_S) as con:
        if not warehouse_lib.table_exists(con, *warehouse_lib.LOADS_TABLE.split(".")):
            return {}
        rows = con.execute(f"SELECT table_name, partition_key, file_sha256 FROM {warehouse_lib.LOADS_TABLE}"
                           ).fetchall()
    return {(table.split(".", 1)[-1], key): sha for table, key, sha in rows}


def _run_key(arrivals: list[Arrival]) -> str:
    return "arrival:" + "+".join(sorted(a.run_key_part for a in arrivals))


def _tags(arrivals: list[Arrival]) -> dict[str, str]:
    tables = sorted({a.table for a in arrivals})
    days = sorted({a.partition_key for a in arrivals if a.partition is not None})
    span = f" over {len(days)} day(s) {days[0]}..{days[-1]}" if days else ""
    return {TAG_BATCHES: f"{len(arrivals)} batch(es) of {', '.join(tables)}{span}"[:200],
            "batch_platform/trigger": ARRIVAL_SENSOR}


def catch_up_request(due: list[Arrival]) -> dg.RunRequest:
    """Many days at once (a first start, the end of an outage): one backfill, run as a single run per table (the
    raw assets' single-run backfill policy) instead of a run per day."""
    keys: dict[str, set[str]] = defaultdict(set)
    snapshots = set()
    for a in due:
        if a.partition is None:
            snapshots.add(dg.AssetKey(["raw", a.table]))
        else:
            keys[a.table].add(a.partition_key)
    subset = AssetGraphSubset(
        partitions_subsets_by_asset_key={dg.AssetKey(["raw", t]): daily_partitions.subset_with_partition_keys(k)
                                         for t, k in keys.items()},
        non_partitioned_asset_keys=snapshots)
    return dg.RunRequest.for_asset_graph_subset(subset, tags=_tags(due) | {TAG_CATCH_UP: "true"})


def arrival_requests(due: list[Arrival]) -> list[dg.RunRequest]:
    """Up to ``CATCH_UP_DAYS`` days: one run per day (its due tables only) and one for the due reference snapshots,
    each with a run key naming its batches; the raw tables' dbt tests run with the feature build, not with each
    load. More days: one catch-up backfill."""
    days = {a.partition_key for a in due if a.partition is not None}
    if len(days) > CATCH_UP_DAYS:
        return [catch_up_request(due)]
    by_day: dict[str, list[Arrival]] = defaultdict(list)
    for a in due:
        by_day[a.partition_key].append(a)
    requests = []
    for key in sorted(by_day):
        arrivals = by_day[key]
        selection = [dg.AssetKey(["raw", t]) for t in sorted(a.table for a in arrivals)]
        if arrivals[0].partition is None:
            requests.append(dg.RunRequest(run_key=_run_key(arrivals), asset_selection=selection,
                                          asset_check_keys=[], tags=_tags(arrivals)))
        else:
            requests.append(dg.RunRequest(run_key=_run_key(arrivals), partition_key=key, asset_selection=selection,
                                          asset_check_keys=[], tags=_tags(arrivals)))
    return requests


def _requested(cursor: str | None) -> set[str]:
    return set(json.loads(cursor)) if cursor else set()


@dg.sensor(
    name=ARRIVAL_SENSOR,
    asset_selection=dg.AssetSelection.groups(RAW_GROUP),  # run requests name their assets; catch-ups are backfills
    minimum_interval_seconds=60,
    default_status=default_status(),
    description="Loads each landed batch once it is complete (manifest present, sha256 matching the file) and "
    "published (its manifest's published_at has passed), unless the warehouse already holds it with the same "
    "bytes: one run per day with just its due tables (tomorrow's schedule included), one for snapshots; more than two days at once (a first start, an outage) as one "
    "backfill run per table. Run key = table, partition and sha256 of every batch it loads; the cursor holds "
    "what was requested and is not loaded yet. Runs by default on the live clock.",
)
def landing_arrivals(context: dg.SensorEvaluationContext, landing: LandingZoneResource,
                     warehouse: WarehouseResource):
    try:
        loaded = loaded_batches(warehouse.db_path)
    except warehouse_lib.WarehouseLockTimeout:
        return dg.SkipReason(f"the warehouse is busy (locked for more than {LOCK_WAIT_S:.0f}s): next tick")
    due, skipped = due_batches(
        Path(landing.landing_dir), daily=list(DAILY_CONTRACTS), reference=list(REFERENCE_CONTRACTS),
        loaded=loaded, now=get_current_datetime(), time_model=load_time_model(), clock=settings.data_clock(),
        has_partition=daily_partitions.has_partition_key)
    for s in skipped[:20]:
        context.log.info(f"not yet: {s.table} {s.partition_key}: {s.reason}")
    # requested on an earlier tick and not loaded yet (a backfill has no run key to deduplicate it by)
    requested = _requested(context.cursor) & {a.run_key_part for a in due}
    fresh = [a for a in due if a.run_key_part not in requested]
    cursor = json.dumps(sorted(requested | {a.run_key_part for a in fresh}))
    if not fresh:
        waiting = f"; {len(skipped)} batch(es) not complete or not published yet" if skipped else ""
        loading = f"; {len(requested)} requested batch(es) still loading" if requested else ""
        return dg.SensorResult(skip_reason=f"nothing new in {landing.landing_dir}{waiting}{loading}", cursor=cursor)
    return dg.SensorResult(run_requests=arrival_requests(fresh), cursor=cursor)
