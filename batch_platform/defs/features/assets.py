"""dbt feature models as Dagster assets: staging → intermediate → marts, with dbt tests as asset checks.

Sources attach to the raw assets by key (``["raw", <table>]``), and their dbt tests are asset checks of those raw
assets. dbt runs in a subprocess that opens the DuckDB warehouse itself, so the step claims the warehouse pool and
holds the warehouse's exclusive file lock for the whole ``dbt build``.
"""

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_shared.record import replace
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from batch_platform import settings
from batch_platform.defs.features.project import dbt_project, ensure_manifest
from batch_platform.defs.monitoring.conditions import source_test_due, with_its_asset
from batch_platform.defs.resources import WarehouseResource
from batch_platform.lib import dbt_runs
from batch_platform.lib import warehouse as warehouse_lib

LAYERS = ("staging", "intermediate", "marts")
RAW_PREFIX = "raw"  # dbt sources attach to the raw assets by key: ["raw", <table>]


class _Kept:
    def __init__(self) -> None:
        self.restored: list[str] = []


@contextlib.contextmanager
def last_good_files(directory: Path, pattern: str):
    """Copy ``directory/pattern`` aside; if the block raises, put the copies back (atomically per file) and
    remove files the block created, then re-raise."""
    backup = directory / ".last_good"
    shutil.rmtree(backup, ignore_errors=True)
    backup.mkdir()
    before = {p.name for p in directory.glob(pattern)}
    for name in before:
        shutil.copy2(directory / name, backup / name)
    kept = _Kept()
    try:
        yield kept
    except BaseException:
        for name in before:
            tmp = directory / f".{name}.restore"
            shutil.copy2(backup / name, tmp)
            os.replace(tmp, directory / name)
            kept.restored.append(name)
        for p in directory.glob(pattern):
            if p.name not in before:
                p.unlink()
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


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


# Source tests become checks of the raw assets they test (keys ["raw", <table>], defined by the ingest stage): they
# run in the feature build (automation, or the `build_features` job), whose `dbt build` runs them before the models
# that read the sources; loads do not run them (one dbt invocation a day instead of one per batch).


    def get_asset_check_spec(self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str,
                             project) -> dg.AssetCheckSpec | None:
        """Every dbt test says when automation runs it: a test of a source (a check of the raw asset) with the
        feature build after that raw table updated — once, before the models that read it (a failing one stops
        them), not with each load; a test of a model with its model."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        source = spec.asset_key.path[0] == RAW_PREFIX
        return replace(spec, automation_condition=source_test_due() if source else with_its_asset())


translator = FeatureDbtTranslator(
    settings=DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_source_tests_as_checks=True)
)


@dbt_assets(
    manifest=ensure_manifest(),
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool=settings.WAREHOUSE_POOL,
)
def dbt_feature_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """`dbt build` of the selected models (tests run as asset checks) under the warehouse's exclusive lock.

    dbt writes the parquet feature tables in place and does not always stop before a failing test's siblings
    are rebuilt (a `relationships` test runs after both of its parents). So the last good feature files are kept
    aside and put back when the build fails: Feast never reads features from a build whose tests failed."""
    features = settings.features_dir()
    features.mkdir(parents=True, exist_ok=True)
    # A test runs when all the models it reads are in the build (dbt's default "eager" also runs a relationships
    # test whose other model is not built yet, when only one side is selected)
    os.environ.setdefault("DBT_INDIRECT_SELECTION", "cautious")
    runs = settings.dbt_runs_dir()  # this data dir's invocations: dbt's parse state is reused across them
    target = dbt_runs.new_invocation(runs, context.run.run_id[:8], warehouse.db_path)
    with warehouse_lib.warehouse_lock(warehouse.db_path, exclusive=True, timeout_s=warehouse.lock_timeout_s):
        try:
            with last_good_files(features, "*.parquet") as kept:
                yield from dbt.cli(["build"], context=context, target_path=target).stream()
        finally:
            dbt_runs.keep_parse_state(runs, target, warehouse.db_path)
        if kept.restored:
            context.log.warning(f"dbt build failed: restored the last good feature files {kept.restored}")
