"""``batch-platform demo --example NAME``: a shipped example project run end to end by the platform's own jobs.

The example's data comes from the registry package named in its ``example.yaml`` and is landed day by day as its
upstream would (:mod:`batch_platform.lib.examples`); from there the same Dagster jobs as for flights take it --
ingest (one backfill run over the history, then the calendar published ahead of the next day), the dbt feature
build with its tests, Feast, training sets, candidates, the gate, the registry, scoring with its drift check -- so
every run shows in the UI of the example's instance. The example is the process's project
(``BATCH_PLATFORM_PROJECT``), which the CLI sets before it starts this in a process of its own (definitions and
partitions follow the project and the data dir's clock when they load).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import dagster as dg

from batch_platform import settings
from batch_platform.lib import examples, project
from batch_platform.lib.clock import record_clock


def environment(name: str, data_dir: Path | None = None) -> dict[str, str]:
    """The variables that make a process the example ``name``'s platform: its project folder, a data dir of its own
    (default ``.data/examples/<name>``) and a Dagster instance in that data dir."""
    example = examples.load_example(name)
    data = Path(data_dir or settings.REPO_ROOT / ".data" / "examples" / name).resolve()
    return {**example.environment, settings.DATA_DIR_VAR: str(data), "DAGSTER_HOME": str(data / "dagster_home")}


def _ahead(contracts) -> list[dg.AssetKey]:
    """The daily tables published before their day (a schedule, a calendar): landed for the day to be scored."""
    return [dg.AssetKey([c.source, c.table]) for c in contracts
            if not c.is_snapshot and c.published is not None and c.published.day_offset < 0]


def run(name: str, days: int, echo=print) -> int:
    """Land ``days`` days of the example from the first day of its replay, ingest them, build its features, train,
    gate and promote its models, score the next day, then -- the morning its labels are published -- measure
    the production accuracy of those predictions. Returns the exit code (0: every run succeeded)."""
    from batch_platform.lib.registry import ModelRegistry
    from batch_platform.lib.specs import load_specs
    from batch_platform.defs.scoring.assets import DRIFT_CHECK
    from batch_platform.pipeline import latest_check, latest_metadata, load_definitions, run_job, step_log

    example = examples.load_example(name)
    if os.environ.get(project.PROJECT_VAR) != str(example.folder):
        raise RuntimeError(f"run the example in a process whose {project.PROJECT_VAR} is {example.folder}")
    t0 = time.perf_counter()
    settings.export_defaults()
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(settings.DEFAULT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    record_clock(settings.clock_path(), example.replay_clock)
    first = example.replay[0]
    last = first + dt.timedelta(days=days - 1)
    scored = last + dt.timedelta(days=1)
    if scored > example.replay[1]:
        raise ValueError(f"{name} replays {example.replay[0]} .. {example.replay[1]}: {days} days do not fit")
    echo(f"== example {name}: {example.description}")
    echo(f"   data: {example.data.get('title', '')} ({settings.data_dir()})")
    echo(f"-- 1/6 land {first} .. {scored} as the upstream publishes it")
    for r in examples.land(example, settings.landing_dir(), first, scored):
        echo(f"   {r.table}: {len(r.days)} daily batch(es)" if r.days else f"   {r.table}: snapshot")
    defs = load_definitions()
    contracts = example.contracts.values()
    daily = [dg.AssetKey([c.source, c.table]) for c in contracts if not c.is_snapshot]
    failed = []

    def step(what: str, job: str, partition: str | None = None, **kw) -> None:
        started = time.perf_counter()
        outcome = run_job(defs, instance, job, partition, stdout_log=step_log(job), **kw)
        echo(f"   {what}: {'ok' if outcome.success else 'FAILED'} ({time.perf_counter() - started:.0f} s)")
        if not outcome.success:
            failed.append(what)
            for error in outcome.errors[:3]:
                echo(f"     {error[:400]}")

    with dg.DagsterInstance.get() as instance:
        echo("-- 2/6 ingest: the history in one backfill run, then what is published ahead of the scored day")
        step(f"raw tables {first} .. {last}", "__ASSET_JOB", asset_selection=daily,
             tags={"dagster/asset_partition_range_start": first.isoformat(),
                   "dagster/asset_partition_range_end": last.isoformat(), "batch_platform/trigger": "cli"})
        if _ahead(contracts):
            step(f"published ahead for {scored}", "raw_daily_ingest", scored.isoformat(),
                 asset_selection=_ahead(contracts), tags={"batch_platform/trigger": "cli"})
        if failed:
            return 1
        echo("-- 3/6 features: dbt models and tests, Feast registry and online store")
        step("build_features", "build_features")
        echo("-- 4/6 training sets, candidates, gate, champions")
        step("train_gate_promote", "train_gate_promote")
        echo(f"-- 5/6 score {scored} with every champion, check drift, serve")
        step("batch_scoring", "batch_scoring", scored.isoformat())
        specs = load_specs()
        echo(f"-- 6/6 the morning after: {scored}'s batches are published, its labels final; production accuracy")
        step(f"raw tables {scored}", "raw_daily_ingest", scored.isoformat(), tags={"batch_platform/trigger": "cli"})
        step("build_features", "build_features")
        step("production accuracy", "__ASSET_JOB", scored.isoformat(),
             asset_selection=[dg.AssetKey([f"{s}_production_accuracy"]) for s in specs], with_checks=True)
        registry = ModelRegistry(settings.registry_path())
        for spec in specs.values():
            champion = registry.get_alias(spec.name, "champion")
            if champion is None:
                echo(f"   {spec.name}: no champion")
                continue
            version = registry.get_version(spec.name, champion.version)
            test = (version.metrics or {}).get("test", {})
            gate = version.gate_report or {}
            echo(f"   {spec.name}: champion v{champion.version}, test {spec.gate.metric} "
                 f"{test.get(spec.gate.metric, float('nan')):.4g} on {test.get('rows')} rows; gate "
                 f"{'passed' if gate.get('passed') else 'FAILED'} against the {gate.get('baseline')}")
            drift = latest_check(instance, dg.AssetKey([f"{spec.name}_predictions"]), DRIFT_CHECK)
            echo(f"   {scored} drift: {'n/a' if drift is None else drift[1][:200]}")
            accuracy = latest_metadata(instance, dg.AssetKey([f"{spec.name}_production_accuracy"]))
            if accuracy:
                echo(f"   {scored} production {accuracy['metric']}: {accuracy['value']:.4g} (test window "
                     f"{accuracy['test_window_value']:.4g}) on {accuracy['dagster/row_count']} rows")
    echo(f"\nExample {name} finished in {time.perf_counter() - t0:.0f} s"
         + (f"; failed: {', '.join(failed)}" if failed else "."))
    return 1 if failed else 0


__all__ = ["environment", "run"]
