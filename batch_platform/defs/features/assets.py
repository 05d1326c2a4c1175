"""dbt feature models as Dagster assets: staging → intermediate → marts, with dbt tests as asset checks.

Sources attach to the raw assets by key (``["raw", <table>]``), and their dbt tests are asset checks of those raw
assets. dbt runs in a subprocess that opens the DuckDB warehouse itself, so the step claims the warehouse pool and
holds the warehouse's exclusive file lock for the whole ``dbt build``. Each build is a whole feature generation,
published only when it passed (``batch_platform/lib/feature_generations.py``).
"""

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_shared.record import replace
import yaml
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets, get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.features.dbt_cli import FeatureDbtCliResource
from batch_platform.defs.features.project import dbt_project, ensure_manifest
from batch_platform.defs.monitoring.conditions import source_test_due, with_its_asset
from batch_platform.defs.resources import WarehouseResource
from batch_platform.lib import dbt_runs, faults
from batch_platform.lib import feature_generations as generations
from batch_platform.lib import feature_increments as increments
from batch_platform.lib import warehouse as warehouse_lib
from batch_platform.lib.time_model import load_time_model

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
        if props.get("config", {}).get("materialized") in ("external", "parquet_dataset"):
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


class FeatureBuildConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Rewrite every day of the day-partitioned feature datasets, not only the days whose raw batches "
        "changed since the published build (an incremental build writes the same bytes; this is the check).",
    )


def _datasets() -> dict[str, increments.Dataset]:
    """The project's parquet datasets (feature marts), with their definitions, from the parsed manifest."""
    manifest = json.loads(ensure_manifest().read_text())
    project_vars = yaml.safe_load((settings.DBT_PROJECT_DIR / "dbt_project.yml").read_text()).get("vars")
    feeds = {table: rule.feed for table, rule in load_time_model().spec.features.items()}
    return increments.datasets(manifest, project_vars, feeds)


def _describe(ds: increments.Dataset, since: dt.date | None, carried: int) -> str:
    if since is None:
        return "every day"
    what = "files" if ds.kind == increments.FILES else "rows"
    return f"the days from {since.isoformat()} on ({carried} {what} of earlier days carried over)"


def _start_from(con, source: str, generation: str, generations_dir, partial: bool,
                datasets: Mapping[str, increments.Dataset], selected: Mapping[str, increments.Dataset],
                since: Mapping[str, dt.date | None]) -> tuple[int, dict[str, int]]:
    """What generation ``generation`` starts from, out of the published ``source``: the earlier days of the datasets
    built by day (files linked; table rows copied) and every file of the datasets not rebuilt; in a partial build,
    a copy of the other relations. Returns (relations copied, per dataset the files or rows carried over)."""
    carried = {}
    for name, ds in datasets.items():  # files first: the copied views read them
        if ds.kind == increments.FILES:
            carried[name] = increments.carry_over(generations_dir / source, generations_dir / generation, name,
                                                  ds.partition_by, since[name] if name in selected else dt.date.max)
    # not what the build rebuilds by day: dbt writes those on what was carried over
    copied = generations.clone(con, source, generation, generations_dir,
                               skip={(ds.layer, name) for name, ds in selected.items()}) if partial else 0
    for name, ds in selected.items():
        if ds.kind == increments.TABLE:
            carried[name] = increments.carry_over_table(con, ds, source, generation, since[name])
    return copied, carried


@dbt_assets(
    manifest=ensure_manifest(),
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool=settings.WAREHOUSE_POOL,
)
def dbt_feature_models(context: dg.AssetExecutionContext, dbt: FeatureDbtCliResource, warehouse: WarehouseResource,
                       config: FeatureBuildConfig):
    """`dbt build` of the selected models (data tests run as asset checks; dbt's unit tests, which test the SQL and
    not the data, are left to the test suite: ``tests/test_features_e2e.py``) into the unpublished feature generation,
    under the warehouse's exclusive lock; the generation is published only when the build and its tests passed. A
    build of some of the models starts from a copy of the published generation, so that every generation is
    whole: the models it does not rebuild are the published ones. The day-partitioned feature datasets are
    rebuilt from the first day whose raw batches changed since their published build; the earlier days' files are
    carried over (``batch_platform/lib/feature_increments.py``; ``full_refresh`` rewrites every day).

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
            datasets = _datasets()
            selected = {name: ds for name, ds in datasets.items()
                        if get_asset_key_for_model([dbt_feature_models], name) in context.selected_asset_keys}
            since = increments.plan(con, selected, current.generation if current else None, generations_dir,
                                    full_refresh=config.full_refresh)
            built_from = increments.loads(con)  # what dbt reads: the warehouse stays locked until published
            copied, carried = _start_from(con, current.generation, generation, generations_dir, partial, datasets,
                                          selected, since) if current is not None else (0, {})
        if copied:
            context.log.info(f"building {len(context.selected_asset_keys)} of {len(everything)} models "
                             f"on a copy of generation {current.generation} ({copied} relations)")
        for name in sorted(selected):
            if selected[name].partition_by:
                context.log.info(f"{name}: building {_describe(selected[name], since[name], carried.get(name, 0))}")
        if repaired:
            context.log.warning(f"an earlier publication was interrupted: {repaired}")
        target = dbt_runs.new_invocation(runs, context.run.run_id[:8], warehouse.db_path, generation)
        env = {settings.DBT_GENERATION_VAR: generation, increments.SINCE_ENV: increments.since_env(since),
               settings.DBT_MEMORY_LIMIT_VAR: warehouse.dbt_memory_limit}
        with _environment(**env):
            try:
                yield from dbt.cli(["build", "--exclude-resource-type", "unit_test"], context=context,
                                  target_path=target).stream()
            finally:
                dbt_runs.keep_parse_state(runs, target, warehouse.db_path, generation)
        faults.point("features.before_publish")
        with warehouse_lib.connect_held(warehouse.db_path) as con:
            shown = generations.publish(con, generation, context.run.run_id,
                                        also=lambda c: increments.record(c, selected, built_from))
        faults.point("features.between_warehouse_and_files")
        generations.link(features, generations_dir, generation)
    context.log.info(f"published feature generation {generation}: {len(shown)} relations, files in "
                     f"{generations_dir / generation}")


