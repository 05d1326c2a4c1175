"""dbt feature models as Dagster assets: staging → intermediate → marts, with dbt tests as asset checks.

Sources attach to the raw assets by key (``["raw", <table>]``). dbt runs in a subprocess that opens the DuckDB
warehouse itself, so the step claims the warehouse pool and holds the warehouse's exclusive file lock for the
whole ``dbt build``.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from batch_platform import settings
from batch_platform.defs.features.project import dbt_project, ensure_manifest
from batch_platform.defs.resources import WarehouseResource
from batch_platform.lib import warehouse as warehouse_lib

LAYERS = ("staging", "intermediate", "marts")


class FeatureDbtTranslator(DagsterDbtTranslator):
    """Groups from the model's folder (staging / intermediate / marts); parquet marts get the `parquet` kind."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props.get("resource_type") not in ("model", "seed", "snapshot"):
            return spec
        fqn = props.get("fqn", [])
        layer = next((part for part in fqn if part in LAYERS), "seeds" if props["resource_type"] == "seed" else None)
        kinds = {"dbt", "duckdb"}
        if props.get("config", {}).get("materialized") == "external":
            kinds.add("parquet")
        return spec.replace_attributes(group_name=f"features_{layer}" if layer else spec.group_name).merge_attributes(
            kinds=kinds - set(spec.kinds)
        )


translator = FeatureDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(
    manifest=ensure_manifest(),
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool=settings.WAREHOUSE_POOL,
)
def dbt_feature_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """`dbt build` of the selected models (tests run as asset checks) under the warehouse's exclusive lock."""
    settings.features_dir().mkdir(parents=True, exist_ok=True)
    with warehouse_lib.warehouse_lock(warehouse.db_path, exclusive=True, timeout_s=warehouse.lock_timeout_s):
        yield from dbt.cli(["build"], context=context).stream()
