"""Raw-data assets: one DuckDB table per landed table, keyed ``["raw", <table>]`` so dbt sources attach.

Daily tables (flights, weather, and the flight schedule) are partitioned by flight day; reference tables (planes,
airports, airlines) are snapshots. The schedule of day D lands on D-1, before D's flights happen, so its partition
D is loaded a day before the flights and weather of D. Each load validates the landed file against its contract,
quarantines it on rejection (the warehouse is not touched), and otherwise replaces its partition in one
transaction.
"""


import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from batch_platform import settings
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.resources import LandingZoneResource, WarehouseResource
from batch_platform.lib.landing import daily_batch_path, reference_batch_path
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS, TableContract
from batch_platform.lib.ingest import ingest_batch
from batch_platform.lib.validation import BatchRejected

RAW_GROUP = "raw"


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


def _load(
    context: dg.AssetExecutionContext,
    contract: TableContract,
    path: Path,
    day: dt.date | None,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
) -> dg.MaterializeResult:
    try:
        result = ingest_batch(
            warehouse.db_path,
            contract,
            path,
            day,
            quarantine_dir=Path(landing_zone.quarantine_dir),
            run_id=context.run_id,
            require_manifest=landing_zone.require_manifest,
            lock_timeout_s=warehouse.lock_timeout_s,
            clock=settings.data_clock(),
        )
    except BatchRejected as e:
        raise dg.Failure(
            description=str(e),
            metadata={
                "error": type(e).__name__,
                "rule": e.rule,
                "rows": e.rows if e.rows is not None else -1,
                "examples": dg.MetadataValue.json([str(x) for x in e.examples]),
                "quarantined_to": str(e.quarantined_to or ""),
            },
            allow_retries=False,
        ) from e
    load, batch = result.load, result.batch
    context.log.info(
        f"{contract.qualified_name} partition {load.partition_key}: {load.rows} rows loaded "
        f"(replaced {load.rows_replaced}), checksum {load.checksum[:12]}"
    )
    return dg.MaterializeResult(
        metadata={
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
            "warehouse": dg.MetadataValue.path(str(warehouse.db_path)),
        }
    )


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
    )
    def _raw_daily(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
    ) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        path = daily_batch_path(Path(landing.landing_dir), contract.table, day)
        return _load(context, contract, path, day, warehouse, landing)

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
        return _load(context, contract, path, None, warehouse, landing)

    return _raw_reference


raw_daily_assets = [build_daily_raw_asset(c) for c in DAILY_CONTRACTS]
raw_reference_assets = [build_reference_raw_asset(c) for c in REFERENCE_CONTRACTS]

raw_daily_ingest_job = dg.define_asset_job(
    "raw_daily_ingest",
    selection=dg.AssetSelection.assets(*raw_daily_assets),
    partitions_def=daily_partitions,
    description="Load one flight day's landed batches (flights, weather, flight schedule) into the warehouse. "
    "The schedule of a day lands the day before its flights: a run for that day may select it alone.",
)
raw_reference_refresh_job = dg.define_asset_job(
    "raw_reference_refresh",
    selection=dg.AssetSelection.assets(*raw_reference_assets),
    description="Load the reference snapshots (planes, airports, airlines) into the warehouse.",
)

# The daily cycle starts here: yesterday's flights and weather land at 06:00 New York time (the time model); at
# 06:30 this schedule loads yesterday's flight day. The partitions reach tomorrow on the live clock, so the schedule
# names its partition itself rather than taking the newest one. (The schedule of a day lands a day earlier than its
# flights, so that day's run finds the schedule already loaded.)
@dg.schedule(
    name="raw_daily_ingest_schedule",
    job=raw_daily_ingest_job,
    cron_schedule="30 6 * * *",
    execution_timezone=daily_partitions.timezone,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every day at 06:30 New York: load yesterday's flight day (flights, weather, schedule).",
)
def raw_daily_ingest_schedule(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time
    day = (tick.astimezone(ZoneInfo(daily_partitions.timezone)) - dt.timedelta(days=1)).date()
    key = day.isoformat()
    if not daily_partitions.has_partition_key(key):
        return dg.SkipReason(f"no partition {key}: the data is on {settings.data_clock().label}, which ends "
                             f"{daily_partitions.get_last_partition_key()}")
    return dg.RunRequest(run_key=key, partition_key=key)


raw_reference_refresh_schedule = dg.ScheduleDefinition(
    name="raw_reference_refresh_schedule",
    job=raw_reference_refresh_job,
    cron_schedule="15 6 * * 1",
    execution_timezone=daily_partitions.timezone,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Mondays at 06:15 New York: reload the reference snapshots (planes, airports, airlines).",
)
