"""Arrival-driven ingest: a sensor on the landing zone that loads each batch once it is complete and published.

Every tick lists the landing zone's manifests (:func:`batch_platform.lib.arrivals.due_batches`): a batch whose
manifest matches its file, whose publication time has passed and which the load log does not hold with these bytes
is requested, per partition, as a run of ``raw_daily_ingest`` selecting only the due tables of that day (the
schedule of tomorrow included: it is a partition of its own); reference snapshots as ``raw_reference_refresh``.
The run key names every batch with its sha256: a correction (new bytes) is loaded again, a duplicate tick is not.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import dagster as dg

from batch_platform import settings
from batch_platform.defs.ingest.assets import raw_daily_ingest_job, raw_reference_refresh_job
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.resources import LandingZoneResource, WarehouseResource
from batch_platform.lib import warehouse as warehouse_lib
from batch_platform.lib.arrivals import Arrival, due_batches
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS
from batch_platform.lib.time_model import load_time_model

ARRIVAL_SENSOR = "landing_arrivals"
TAG_BATCHES = "batch_platform/arrived_batches"
LOCK_WAIT_S = 5.0  # a busy warehouse postpones the tick instead of holding the sensor


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


def arrival_requests(due: list[Arrival]) -> list[dg.RunRequest]:
    """One request per partition day (its due tables only) and one for the due reference snapshots."""
    by_day: dict[str, list[Arrival]] = defaultdict(list)
    for a in due:
        by_day[a.partition_key].append(a)
    requests = []
    for key in sorted(by_day):
        arrivals = by_day[key]
        tables = sorted(a.table for a in arrivals)
        selection = [dg.AssetKey(["raw", t]) for t in tables]
        tags = {TAG_BATCHES: ",".join(tables), "batch_platform/trigger": ARRIVAL_SENSOR}
        if arrivals[0].partition is None:
            requests.append(dg.RunRequest(run_key=_run_key(arrivals), job_name=raw_reference_refresh_job.name,
                                          asset_selection=selection, tags=tags))
        else:
            requests.append(dg.RunRequest(run_key=_run_key(arrivals), job_name=raw_daily_ingest_job.name,
                                          partition_key=key, asset_selection=selection, tags=tags))
    return requests


@dg.sensor(
    name=ARRIVAL_SENSOR,
    jobs=[raw_daily_ingest_job, raw_reference_refresh_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Loads each landed batch once it is complete (manifest present, sha256 matching the file) and "
    "published (its manifest's published_at has passed), unless the warehouse already holds it with the same "
    "bytes: one raw_daily_ingest run per day with just its due tables (tomorrow's schedule included), "
    "raw_reference_refresh for snapshots. Run key = table, partition and sha256 of every batch it loads.",
)
def landing_arrivals(context: dg.SensorEvaluationContext, landing: LandingZoneResource,
                     warehouse: WarehouseResource):
    try:
        loaded = loaded_batches(warehouse.db_path)
    except warehouse_lib.WarehouseLockTimeout:
        return dg.SkipReason(f"the warehouse is busy (locked for more than {LOCK_WAIT_S:.0f}s): next tick")
    due, skipped = due_batches(
        Path(landing.landing_dir), daily=list(DAILY_CONTRACTS), reference=list(REFERENCE_CONTRACTS),
        loaded=loaded, now=dt.datetime.now(dt.UTC), time_model=load_time_model(), clock=settings.data_clock(),
        has_partition=daily_partitions.has_partition_key)
    for s in skipped[:20]:
        context.log.info(f"not yet: {s.table} {s.partition_key}: {s.reason}")
    if not due:
        waiting = f"; {len(skipped)} batch(es) not complete or not published yet" if skipped else ""
        return dg.SkipReason(f"nothing new in {landing.landing_dir}{waiting}")
    return arrival_requests(due)
