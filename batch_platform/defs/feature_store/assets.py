"""Feast: the registry of feature definitions (`feast apply`) and the online store (incremental, batched)."""

import datetime as dt

import dagster as dg
import duckdb
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.resources import FeatureStoreResource, WarehouseResource
from batch_platform.lib import faults, publication_check
from batch_platform.lib import feature_generations as generations
from batch_platform.lib.specs import load_specs
from batch_platform.lib.time_model import load_time_model

FEATURE_TABLES = tuple(load_time_model().spec.features)
"""The dbt marts Feast reads: the feature tables the project's time model declares (each with its validity rule)."""
FEATURE_TABLE_KEYS = [get_asset_key_for_model([dbt_feature_models], name) for name in FEATURE_TABLES]
GROUP = "feature_store"
PUBLICATION_CHECK = "features_valid_after_publication"
FEATURE_DEFINITIONS_KEY = dg.AssetKey(["feast", "feature_definitions"])


@dg.asset(
    key=FEATURE_DEFINITIONS_KEY,
    group_name=GROUP,
    kinds={"feast"},
    deps=FEATURE_TABLE_KEYS,
    pool=settings.WAREHOUSE_POOL,
    check_specs=[dg.AssetCheckSpec(
        PUBLICATION_CHECK, asset=FEATURE_DEFINITIONS_KEY, blocking=True,
        description="No feature row is valid before the raw batches it was computed from were published (final, for "
        "features built from outcomes), by the load log and the time model, independently of the dbt SQL; and each "
        "day's scoring frame was published by every spec's prediction cutoff.")],
    description="`feast apply` of feature_repo/: entities, parquet sources over the dbt marts, feature views "
    "with TTLs and one feature service per model, written to the Feast registry. Blocked (nothing served) when a "
    "feature table is valid before its data was published.",
)
def feast_feature_definitions(context: dg.AssetExecutionContext, feature_store: FeatureStoreResource,
                              warehouse: WarehouseResource):
    with warehouse.connect(read_only=True) as con:
        repaired = generations.reconcile(con, settings.features_dir(), settings.feature_generations_dir())
        if repaired:
            context.log.warning(f"an earlier feature publication was interrupted: {repaired}")
        report = publication_check.check_feature_tables(con, settings.features_dir(), load_time_model(),
                                                        list(load_specs().values()))
    context.log.info(f"publication-time check: {report.describe()}")
    client = feature_store.client()
    faults.point("feast.before_apply")
    summary = client.apply()
    fingerprint = client.definitions_fingerprint()
    context.log.info(f"feast apply: {summary}")
    return dg.MaterializeResult(
        metadata={
            "feature_definitions_fingerprint": fingerprint,
            "summary": dg.MetadataValue.json(_as_json(summary)),
            "registry": dg.MetadataValue.path(feature_store.registry_path),
        },
        check_results=[dg.AssetCheckResult(
            check_name=PUBLICATION_CHECK,
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=report.describe(),
            metadata={"tables": dg.MetadataValue.json(report.as_metadata()),
                      "frame_violations": dg.MetadataValue.json(report.frame_violations[:20])},
        )],
    )


class OnlineStoreConfig(dg.Config):
    batch_days: int = Field(default=7, description="Materialize the online store in windows of this many days.")
    end: str | None = Field(
        default=None,
        description="Materialize up to this instant (ISO 8601); default: just after the newest feature row.",
    )


def newest_feature_ts() -> dt.datetime:
    """The newest `feature_ts` across the parquet feature tables (the data's 'now')."""
    con = duckdb.connect()
    try:
        files = [str(generations.feature_table(settings.features_dir(), t)) for t in FEATURE_TABLES]
        (ts,) = con.execute(
            "SELECT max(feature_ts) FROM read_parquet(?, union_by_name = true)", [files]
        ).fetchall()[0]
    finally:
        con.close()
    return ts.astimezone(dt.UTC)


@dg.asset(
    key=["feast", "online_store"],
    group_name=GROUP,
    kinds={"feast", "sqlite"},
    deps=[feast_feature_definitions],
    description="Latest feature values per entity in Feast's online store (SQLite by default, Redis when "
    "BATCH_PLATFORM_REDIS is set), materialized incrementally from where the last run ended, in windows of "
    "`batch_days`.",
)
def feast_online_store(
    context: dg.AssetExecutionContext, config: OnlineStoreConfig, feature_store: FeatureStoreResource
):
    end = dt.datetime.fromisoformat(config.end) if config.end else newest_feature_ts() + dt.timedelta(seconds=1)
    faults.point("feast.before_materialize")
    client = feature_store.client()
    summary = client.materialize_incremental(end, batch_days=config.batch_days)
    context.log.info(f"online store ({client.online_store}) materialized up to {end.isoformat()}: {summary}")
    return dg.MaterializeResult(
        metadata={
            "materialized_until": end.isoformat(),
            "summary": dg.MetadataValue.json(_as_json(summary)),
            "online_store": client.online_store,
        }
    )


def _as_json(obj):
    import dataclasses
    import json

    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.loads(json.dumps(data, default=str))
