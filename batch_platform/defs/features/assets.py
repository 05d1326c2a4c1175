"""dbt feature models as Dagster assets: staging → intermediate → marts, with dbt tests as asset checks.

Sources attach to the raw assets by key (``["raw", <table>]``), and their dbt tests are asset checks of those raw
assets. dbt runs in a subprocess that opens the DuckDB warehouse itself, so the step claims the warehouse pool and
holds the warehouse's exclusive file lock for the whole ``dbt build``. Each build is a whole feature generation,
published only when it passed (``batch_platform/lib/feature_generations.py``).
"""

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_shared.record import replace
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from batch_platform import settings
from batch_platform.defs.features.dbt_cli import FeatureDbtCliResource
from batch_platform.defs.features.project import dbt_project, ensure_manifest
from batch_platform.defs.monitoring.conditions import source_test_due, with_its_asset
from batch_platform.defs.resources import WarehouseResource
from batch_platform.lib import dbt_runs, faults
from batch_platform.lib import feature_generations as generations
from batch_platform.lib import warehouse as warehouse_lib

LAYERS = ("staging", "intermediate", "marts")
RAW_PREFIX = "raw"  # dbt sources attach to the raw assets by key: ["raw", <table>]


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


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for a block (dbt's subprocess inherits them), then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dbt_assets(
    manifest=ensure_manifest(),
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool=settings.WAREHOUSE_POOL,
)
def dbt_feature_models(context: dg.AssetExecutionContext, dbt: FeatureDbtCliResource, warehouse: WarehouseResource):
    """`dbt build` of the selected models (data tests run as asset checks; dbt's unit tests, which test the SQL and
    not the data, are left to the test suite: ``tests/test_features_e2e.py``) into the unpublished feature generation,
    under the warehouse's exclusive lock; the generation is published only when the build and its tests passed. A
    build of some of the models starts from a copy of the published generation, so that every generation is
    whole: the models it does not rebuild are the published ones.

    dbt writes in place and does not always stop before a failing test's siblings are rebuilt (a `relationships`
    test runs after both of its parents), and a killed build stops anywhere: so nothing it writes is read until
    the whole build succeeded. Feast, training and scoring read the published generation throughout."""
    features, generations_dir = settings.features_dir(), settings.feature_generations_dir()
    # A test runs when all the models it reads are in the build (dbt's default "eager" also runs a relationships
    # test whose other model is not built yet, when only one side is selected)
    os.environ.setdefault("DBT_INDIRECT_SELECTION", "cautious")
    runs = settings.dbt_runs_dir()  # this data dir's invocations: dbt's parse state is reused across them
    with warehouse_lib.warehouse_lock(warehouse.db_path, exclusive=True, timeout_s=warehouse.lock_timeout_s):
        with warehouse_lib.connect_held(warehouse.db_path) as con:
            repaired = generations.reconcile(con, features, generations_dir)
            generation = generations.next_generation(con)
            generations.prepare(con, generation, generations_dir)
            current = generations.published(con)
            everything = dbt_feature_models.keys  # (context.assets_def is the subset in a subset run)
            partial = not everything <= set(context.selected_asset_keys)
            copied = generations.clone(con, current.generation, generation, generations_dir) \
                if current is not None and partial else 0
        if copied:
            context.log.info(f"building {len(context.selected_asset_keys)} of {len(everything)} models "
                             f"on a copy of generation {current.generation} ({copied} relations)")
        if repaired:
            context.log.warning(f"an earlier publication was interrupted: {repaired}")
        target = dbt_runs.new_invocation(runs, context.run.run_id[:8], warehouse.db_path, generation)
        with _environment(**{settings.DBT_GENERATION_VAR: generation}):
            try:
                yield from dbt.cli(["build", "--exclude-resource-type", "unit_test"], context=context,
                                  target_path=target).stream()
            finally:
                dbt_runs.keep_parse_state(runs, target, warehouse.db_path, generation)
        faults.point("features.before_publish")
        with warehouse_lib.connect_held(warehouse.db_path) as con:
            shown = generations.publish(con, generation, context.run.run_id)
        faults.point("features.between_warehouse_and_files")
        generations.link(features, generations_dir, generation)
    context.log.info(f"published feature generation {generation}: {len(shown)} relations, files in "
                     f"{generations_dir / generation}")


