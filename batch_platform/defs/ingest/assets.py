"""Raw-data assets: one DuckDB table per landed table, keyed ``["raw", <table>]`` so dbt sources attach.

Daily tables (flights, weather, and the flight schedule) are partitioned by flight day; reference tables (planes,
airports, airlines) are snapshots. The schedule of day D lands on D-1, before D's flights happen, so its partition
D is loaded a day before the flights and weather of D. Each load validates the landed file against its contract,
quarantines it on rejection (the warehouse is not touched), and otherwise replaces its partition in one
transaction.
"""


import datetime as dt
import time
from pathlib import Path

import dagster as dg

from batch_platform import settings
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.resources import LandingZoneResource, WarehouseResource
from batch_platform.lib.landing import daily_batch_path, reference_batch_path
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS, TableContract
from batch_platform.lib.ingest import ingest_batch, ingest_many
from batch_platform.lib.validation import BatchRejected

RAW_GROUP = "raw"
PROGRESS_EVERY_S = 5.0  # a catch-up run logs its progress this often


def _definition_metadata(contract: TableContract) -> dict:
    return {
        "dagster/table_name": f"warehouse.{contract.qualified_name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.type,
                    description=c.description,
                    constraints=dg.TableColumnConstraints(
                        nullable=c.nullable,
                        unique=contract.key == (c.name,),
                        other=[f"range [{c.min}, {c.max}] ({c.on_out_of_range} outside)"]
                        if (c.min is not None or c.max is not None)
                        else [],
                    ),
                )
                for c in contract.columns
            ]
        ),
        "key": ", ".join(contract.key),
        "schema_version": contract.schema_version,
        "row_rules": dg.MetadataValue.json({r.name: r.predicate for r in contract.row_rules}),
    }


class Rejected(Exception):
    """A batch of a ranged load was rejected; carries the Failure to raise once the other days are loaded."""

    def __init__(self, failure: dg.Failure):
        super().__init__(failure.description)
        self.failure = failure


def _rejected(contract: TableContract, day: dt.date | None, e: BatchRejected) -> Rejected:
    return Rejected(dg.Failure(
        description=f"{contract.qualified_name} {day or 'snapshot'}: {e}",
        metadata={
            "error": type(e).__name__,
            "rule": e.rule,
            "rows": e.rows if e.rows is not None else -1,
            "examples": dg.MetadataValue.json([str(x) for x in e.examples]),
            "quarantined_to": str(e.quarantined_to or ""),
            "partition": day.isoformat() if day else "",
        },
        allow_retries=False,
    ))


def _ingest_options(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                    landing_zone: LandingZoneResource) -> dict:
    """The keyword arguments ``ingest_batch`` and ``ingest_many`` take from the run and the resources."""
    return {"quarantine_dir": Path(landing_zone.quarantine_dir), "archive_dir": Path(landing_zone.archive_dir),
            "run_id": context.run.run_id, "require_manifest": landing_zone.require_manifest,
            "lock_timeout_s": warehouse.lock_timeout_s, "clock": settings.data_clock()}


def _load(
    context: dg.AssetExecutionContext,
    contract: TableContract,
    path: Path,
    day: dt.date | None,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
) -> dict:
    """Validate and load one batch; return its materialization metadata (``Rejected`` when the batch is)."""
    try:
        result = ingest_batch(warehouse.db_path, contract, path, day,
                              **_ingest_options(context, warehouse, landing_zone))
    except BatchRejected as e:
        raise _rejected(contract, day, e) from e
    _log_loaded(context, contract, [result.load])
    return _loaded_metadata(contract, path, warehouse, result)


def _load_days(
    context: dg.AssetExecutionContext,
    contract: TableContract,
    days: list[dt.date],
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
    loaded: dict[str, dict],
) -> None:
    """Validate and load many days' batches of one table in day order (:func:`ingest_many`: validation runs ahead
    in threads, one warehouse connection), each day's metadata into ``loaded`` as it is loaded; ``Rejected`` at the
    first rejected day (the days before it stay loaded, none after it is). Progress is logged every
    ``PROGRESS_EVERY_S`` seconds, one line for the days loaded since the last (each day's own figures are in the
    materialization's ``days``): a line per day was a run-log event, stored with its commit, per partition."""
    paths = {day: daily_batch_path(Path(landing_zone.landing_dir), contract.table, day) for day in days}
    since: list = []
    last = time.monotonic()

    def on_loaded(result) -> None:
        nonlocal last
        key = result.load.partition_key
        loaded[key] = _loaded_metadata(contract, paths[dt.date.fromisoformat(key)], warehouse, result)
        since.append(result.load)
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            _log_loaded(context, contract, since)
            since.clear()
            last = time.monotonic()

    try:
        ingest_many(warehouse.db_path, [(contract, paths[day], day) for day in days],
                    **_ingest_options(context, warehouse, landing_zone), on_loaded=on_loaded)
    except BatchRejected as e:
        day = next(d for d in days if d.isoformat() not in loaded)
        raise _rejected(contract, day, e) from e
    finally:
        _log_loaded(context, contract, since)


def _log_loaded(context, contract: TableContract, loads: list) -> None:
    """One log line for the partitions in ``loads`` (nothing when empty)."""
    if len(loads) == 1:
        load = loads[0]
        context.log.info(f"{contract.qualified_name} partition {load.partition_key}: {load.rows} rows loaded "
                         f"(replaced {load.rows_replaced}), checksum {load.checksum[:12]}")
    elif loads:
        context.log.info(
            f"{contract.qualified_name} partitions {loads[0].partition_key} .. {loads[-1].partition_key}: "
            f"{len(loads)} days, {sum(x.rows for x in loads):,} rows loaded "
            f"(replaced {sum(x.rows_replaced for x in loads):,})")


def _loaded_metadata(contract: TableContract, path: Path, warehouse: WarehouseResource, result) -> dict:
    load, batch = result.load, result.batch
    return {
        "dagster/row_count": load.rows,
        "rows_replaced": load.rows_replaced,
        "checksum": load.checksum,
        "source_file": dg.MetadataValue.path(str(path)),
        "file_sha256": batch.file_sha256,
        "schema_version": contract.schema_version,
        "published_at": load.published_at.isoformat() if load.published_at else "",
        "final_at": load.final_at.isoformat() if load.final_at else "",
        "data_clock": settings.data_clock().label,
        "nulled_out_of_range": dg.MetadataValue.json(batch.nulled_out_of_range),
        "references_unchecked": dg.MetadataValue.json(list(result.references_unchecked)),
        "warehouse": dg.MetadataValue.path(str(warehouse.db_path)),
    }


def _range_metadata(loaded: dict[str, dict]) -> dict:
    """One run over several days (a catch-up backfill): the totals, and each day's load under ``days``."""
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    plain = {day: {k: (v.value if isinstance(v, dg.MetadataValue) else v) for k, v in md.items()
                   if k in ("dagster/row_count", "rows_replaced", "checksum", "file_sha256", "published_at")}
             for day, md in loaded.items()}
    return {"dagster/row_count": sum(md["dagster/row_count"] for md in loaded.values()),
            "partitions_loaded": len(loaded), "days": dg.MetadataValue.json(plain),
            "data_clock": settings.data_clock().label}


def build_daily_raw_asset(contract: TableContract) -> dg.AssetsDefinition:
    @dg.asset(
        name=contract.table,
        key_prefix=[contract.source],
        group_name=RAW_GROUP,
        partitions_def=daily_partitions,
        kinds={"duckdb", "csv"},
        pool=settings.WAREHOUSE_POOL,
        code_version=contract.fingerprint[:16],
        description=f"{contract.description} Validated against contract {contract.schema_version}.",
        metadata=_definition_metadata(contract),
        # a catch-up over many days (first start, after an outage) is one run, loading day after day
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _raw_daily(context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource):
        loaded: dict[str, dict] = {}
        days = [dt.date.fromisoformat(key) for key in context.partition_keys]
        try:
            if len(days) == 1:
                path = daily_batch_path(Path(landing.landing_dir), contract.table, days[0])
                loaded[days[0].isoformat()] = _load(context, contract, path, days[0], warehouse, landing)
            else:
                _load_days(context, contract, days, warehouse, landing, loaded)
        except Rejected as e:
            # the days loaded so far stay loaded, and recorded as such; the run fails on the rejected one
            for done, metadata in loaded.items():
                yield dg.AssetMaterialization(asset_key=context.asset_key, partition=done, metadata=metadata)
            raise e.failure from e
        yield dg.MaterializeResult(metadata=_range_metadata(loaded))

    return _raw_daily


def build_reference_raw_asset(contract: TableContract) -> dg.AssetsDefinition:
    @dg.asset(
        name=contract.table,
        key_prefix=[contract.source],
        group_name=RAW_GROUP,
        kinds={"duckdb", "csv"},
        pool=settings.WAREHOUSE_POOL,
        code_version=contract.fingerprint[:16],
        description=f"{contract.description} Validated against contract {contract.schema_version}.",
        metadata=_definition_metadata(contract),
    )
    def _raw_reference(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
    ) -> dg.MaterializeResult:
        path = reference_batch_path(Path(landing.landing_dir), contract.table)
        try:
            return dg.MaterializeResult(metadata=_load(context, contract, path, None, warehouse, landing))
        except Rejected as e:
            raise e.failure from e

    return _raw_reference


raw_daily_assets = [build_daily_raw_asset(c) for c in DAILY_CONTRACTS]
raw_reference_assets = [build_reference_raw_asset(c) for c in REFERENCE_CONTRACTS]

raw_daily_ingest_job = dg.define_asset_job(
    "raw_daily_ingest",
    # these tables' dbt tests run once in the feature build (build_features), not with each day's load
    selection=dg.AssetSelection.assets(*raw_daily_assets).without_checks(),
    partitions_def=daily_partitions,
    description="Load one flight day's landed batches (flights, weather, flight schedule) into the warehouse. "
    "The schedule of a day lands the day before its flights: a run for that day may select it alone.",
)
raw_reference_refresh_job = dg.define_asset_job(
    "raw_reference_refresh",
    selection=dg.AssetSelection.assets(*raw_reference_assets).without_checks(),
    description="Load the reference snapshots (planes, airports, airlines) into the warehouse.",
)
