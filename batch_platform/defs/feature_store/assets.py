"""Feast: the registry of feature definitions (`feast apply`) and the online store (incremental, batched)."""

import datetime as dt

import dagster as dg
import duckdb
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.resources import FeatureStoreResource

FEATURE_TABLES = (
    "plane_daily_features",
    "route_daily_features",
    "carrier_daily_features",
    "origin_weather_features",
    "plane_attributes",
)
FEATURE_TABLE_KEYS = [get_asset_key_for_model([dbt_feature_models], name) for name in FEATURE_TABLES]
GROUP = "feature_store"


@dg.asset(
    key=["feast", "feature_definitions"],
    group_name=GROUP,
    kinds={"feast"},
    deps=FEATURE_TABLE_KEYS,
    description="`feast apply` of feature_repo/: entities, parquet sources over the dbt marts, feature views "
    "with TTLs and one feature service per model, written to the Feast registry.",
)
def feast_feature_definitions(context: dg.AssetExecutionContext, feature_store: FeatureStoreResource):
    client = feature_store.client()
    summary = client.apply()
    fingerprint = client.definitions_fingerprint()
    context.log.info(f"feast apply: {summary}")
    return dg.MaterializeResult(
        metadata={
            "feature_definitions_fingerprint": fingerprint,
            "summary": dg.MetadataValue.json(_as_json(summary)),
            "registry": dg.MetadataValue.path(feature_store.registry_path),
        }
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
        files = [str(settings.features_dir() / f"{t}.parquet") for t in FEATURE_TABLES]
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
    description="Latest feature values per entity in Feast's online store (SQLite by default, Redis for "
    "scale), materialized incrementally from where the last run ended, in windows of `batch_days`.",
)
def feast_online_store(
    context: dg.AssetExecutionContext, config: OnlineStoreConfig, feature_store: FeatureStoreResource
):
    end = dt.datetime.fromisoformat(config.end) if config.end else newest_feature_ts() + dt.timedelta(seconds=1)
    summary = feature_store.client().materialize_incremental(end, batch_days=config.batch_days)
    context.log.info(f"online store materialized up to {end.isoformat()}: {summary}")
    return dg.MaterializeResult(
        metadata={
            "materialized_until": end.isoformat(),
            "summary": dg.MetadataValue.json(_as_json(summary)),
            "online_store": dg.MetadataValue.path(feature_store.online_store_path),
        }
    )


def _as_json(obj):
    import dataclasses
    import json

    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.loads(json.dumps(data, default=str))
