"""Drive the platform's jobs from the command line: the same Dagster jobs the UI and the daemon run,
executed in-process against the project's persistent instance, so every run shows up in the UI."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from batch_platform import run_health, settings
from batch_platform.lib import warehouse
from batch_platform.lib.contracts import DAILY_CONTRACTS, REFERENCE_CONTRACTS
from batch_platform.lib.ingest import daily_batches
from batch_platform.lib.landing import daily_batch_path, reference_batch_path
from batch_platform.lib.validation import file_sha256


def ensure_dagster_home() -> Path:
    """Use the project's instance (``dagster_home/``) unless DAGSTER_HOME is set."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.DEFAULT_DAGSTER_HOME)))
    home.mkdir(parents=True, exist_ok=True)
    return home


def load_definitions() -> dg.Definitions:
    from batch_platform.definitions import defs

    return defs()


@dataclass
class RunOutcome:
    job: str
    partition: str | None
    run_id: str | None
    success: bool
    skipped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")
"""Dagster's own wrappers around an exception raised in a step ("Error occurred while executing op …"): what
they wrap is the cause worth printing."""


def describe_error(err) -> str:
    """``Type: message`` of the exception a step raised (Dagster's wrapper skipped), then what caused it, e.g.
    ``ValueError: bad spec (caused by KeyError: 'x')``; ``err`` is a ``SerializableErrorInfo``."""
    chain = []
    while err is not None:
        if not any(w in (err.cls_name or "") for w in WRAPPERS):
            chain.append(" ".join(err.message.split()))
        err = err.cause or err.context
    if not chain:
        return "failed (no cause recorded)"
    return chain[0] + "".join(f" (caused by {c})" for c in chain[1:3])


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed step: the step, its partition and the root cause (a named error's own description)."""
    partition = result.dagster_run.tags.get("dagster/partition")
    where = f" [partition {partition}]" if partition else ""
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            user = event.step_failure_data.user_failure_data
            cause = user.description if user and user.description else describe_error(event.step_failure_data.error)
            named = user.metadata.get("partition") if user and user.metadata else None
            at = f" [partition {named.value}]" if named is not None and named.value else where
            messages.append(f"{event.step_key}{at}: {cause}")
    return messages


def _loaded_versions(db_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """``(table, partition key) -> (file sha256, schema version)`` of every partition the warehouse holds with its
    publication time recorded, read in one query."""
    if not db_path.exists():
        return {}
    with warehouse.connect(db_path, read_only=True) as con:
        columns = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' "
            "AND table_name = '_batch_loads'").fetchall()}
        if "published_at" not in columns:
            return {}  # not loaded yet, or loaded before the time model: every batch needs its publication time
        rows = con.execute(f"SELECT table_name, partition_key, file_sha256, schema_version FROM "
                           f"{warehouse.LOADS_TABLE} WHERE published_at IS NOT NULL").fetchall()
    return {(table, key): (sha, version) for table, key, sha, version in rows}


def _unchanged_batches(loaded: dict, partition: str, paths: dict[str, Path]) -> set[str]:
    """The tables among ``paths`` (table -> landed file) whose ``partition`` the warehouse holds loaded from
    exactly that file (same sha256, same contract); ``loaded``: :func:`_loaded_versions`."""
    from batch_platform.lib.contracts import CONTRACTS

    unchanged = set()
    for table, path in paths.items():
        held = loaded.get((f"raw.{table}", partition))
        if held is not None and path.exists() and held == (file_sha256(path), CONTRACTS[table].schema_version):
            unchanged.add(table)
    return unchanged


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, partition: str | None = None,
            tags: dict[str, str] | None = None, stdout_log: Path | None = None,
            asset_selection: Sequence[dg.AssetKey] | None = None, with_checks: bool = False,
            ops_config: dict | None = None) -> RunOutcome:
    """Execute a job in-process against ``instance``, the run tagged with this process (so that a run killed with
    it is known dead), after marking runs killed earlier failed and waiting for the warehouse pool if the job uses
    it (:mod:`batch_platform.run_health`). ``stdout_log``: send what steps print (dbt's console
    output, library warnings) to this file instead of the terminal; the run's events are in the instance either way.
    ``asset_selection``: run only these assets of the job (default: all of them), with their own checks when
    ``with_checks``. ``ops_config``: the run config's ``ops`` (op name -> its config)."""
    job = defs.resolve_job_def(job_name)
    tags = {**(tags or {}), **run_health.process_tags()}
    if _uses_pool(job, settings.WAREHOUSE_POOL):
        # repair dead holders, then wait here, where Ctrl-C / SIGTERM work (inside the run Dagster defers them)
        run_health.wait_for_pool(instance, settings.WAREHOUSE_POOL, echo=lambda m: print(m, file=sys.stderr))
    else:  # no pool to wait for: runs killed earlier are still marked failed first
        run_health.repair_and_report(instance, echo=lambda m: print(m, file=sys.stderr))
    with contextlib.ExitStack() as stack:
        stack.enter_context(run_health.InterruptWatch(instance, echo=lambda m: print(m, file=sys.__stderr__)))
        if stdout_log is not None:
            stdout_log.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(stdout_log, "a"))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        result = _execute(job, instance, partition, tags, asset_selection, with_checks, ops_config)
    return RunOutcome(job_name, partition, result.run_id, result.success, errors=_failure_messages(result))


def _uses_pool(job, pool: str) -> bool:
    """Whether some step of ``job`` claims ``pool``."""
    try:
        return any(getattr(node.definition, "pool", None) == pool for node in job.graph.nodes)
    except Exception:  # noqa: BLE001 - when in doubt, wait for the pool
        return True


def _execute(job, instance, partition, tags, asset_selection=None, with_checks=False, ops_config=None):
    if asset_selection is not None:
        # the selected assets alone: not the checks other assets define on them (the dbt tests of raw sources
        # run in the feature build, which is one whole generation); with_checks: the selected assets' checks too
        job = job.get_subset(asset_selection=set(asset_selection),
                             asset_check_selection=None if with_checks else set())
    return job.execute_in_process(
        instance=instance,
        partition_key=partition,
        raise_on_error=False,
        tags=tags,
        # the CLI prints its own progress; the full event log is in the instance (and the UI)
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    **({"ops": ops_config} if ops_config else {})},
    )


def ingest_range(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: dt.date,
    end: dt.date,
    *,
    force: bool = False,
    schedule_through: dt.date | None = None,
    echo=print,
) -> list[RunOutcome]:
    """Load the reference snapshots, then the flight days in ``[start, end]``, then the flight schedule of
    ``end + 1`` (through ``schedule_through`` when given), which lands the day before its flights: that day's run
    selects only the schedule asset. Consecutive days with every batch to load share one run of
    ``raw_daily_ingest`` over their partition range (:func:`_whole_day_runs`); a day with only some batches to load
    gets a run of its own. Batches whose landed file is already loaded unchanged are skipped unless ``force``, and
    a day with nothing to load gets no run. When a range run rejects a batch, the rejected day is reported and
    the days left with batches to load get a run each."""
    # runs killed earlier are marked failed first: with every batch loaded, no run (and no pool wait) follows
    run_health.repair_and_report(instance, echo)
    db_path = settings.warehouse_path()
    landing = settings.landing_dir()
    outcomes: list[RunOutcome] = []

    ref_paths = {c.table: reference_batch_path(landing, c.table) for c in REFERENCE_CONTRACTS}
    if not force and _unchanged_batches(_loaded_versions(db_path), "__all__", ref_paths) == set(ref_paths):
        outcomes.append(RunOutcome("raw_reference_refresh", None, None, True, "unchanged"))
    else:
        outcomes.append(run_job(defs, instance, "raw_reference_refresh", tags={"batch_platform/trigger": "cli"}))

    days: list[tuple[str, list]] = []  # (day, the contracts of the batches it has to load)
    loaded = {} if force else _loaded_versions(db_path)
    for day, contracts in daily_batches(start, end, settings.data_clock(), schedule_through=schedule_through):
        key = day.isoformat()
        paths = {c.table: daily_batch_path(landing, c.table, day) for c in contracts}
        unchanged = _unchanged_batches(loaded, key, paths)
        pending = [c for c in contracts if c.table not in unchanged]
        if not pending:
            outcomes.append(RunOutcome("raw_daily_ingest", key, None, True, "unchanged"))
        else:
            days.append((key, pending))

    def one_day(key: str, pending: list) -> None:
        partial = len(pending) < len(DAILY_CONTRACTS)
        selection = [dg.AssetKey([c.source, c.table]) for c in pending] if partial else None
        outcome = run_job(defs, instance, "raw_daily_ingest", key, tags={"batch_platform/trigger": "cli"},
                          asset_selection=selection)
        outcomes.append(outcome)
        only = f" ({', '.join(c.table for c in pending)})" if partial else ""
        echo(f"  {key}: " + ("loaded" if outcome.success else "FAILED — " + "; ".join(outcome.errors)) + only)

    for keys in _whole_day_runs(days):
        if len(keys) == 1:
            one_day(keys[0], dict(days)[keys[0]])
            continue
        # consecutive days with every batch to load: one run over the range (the daemon's catch-up backfills
        # run the same way), each table's days validated ahead in threads and loaded over one connection
        outcome = run_job(defs, instance, "raw_daily_ingest", tags={
            "batch_platform/trigger": "cli", ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
        outcome.partition = f"{keys[0]}...{keys[-1]}"
        outcomes.append(outcome)
        if outcome.success:
            for key in keys:
                echo(f"  {key}: loaded")
            continue
        # a batch was rejected: its table's days before it are loaded, none after it. The rejected days are
        # reported; the days left with batches to load get a run each, as without the range.
        after = _loaded_versions(db_path)
        for key in keys:
            errors = [e for e in outcome.errors if f"[partition {key}]" in e]
            paths = {c.table: daily_batch_path(landing, c.table, dt.date.fromisoformat(key)) for c in DAILY_CONTRACTS}
            left = [c for c in DAILY_CONTRACTS if c.table not in _unchanged_batches(after, key, paths)
                    and paths[c.table].exists()]
            if errors:
                echo(f"  {key}: FAILED — " + "; ".join(errors))
            if left and not errors:
                one_day(key, left)
            elif not errors:
                echo(f"  {key}: loaded")
    return outcomes


def _whole_day_runs(days: list[tuple[str, list]]) -> list[list[str]]:
    """Group the days to load into runs: consecutive days with every daily batch to load share one run; a day
    with only some of its batches to load (e.g. the next day's schedule alone) gets a run of its own."""
    runs: list[list[str]] = []
    whole = {key for key, pending in days if len(pending) == len(DAILY_CONTRACTS)}
    for key, _ in days:
        prev = runs[-1] if runs else None
        if (key in whole and prev is not None and prev[-1] in whole
                and dt.date.fromisoformat(key) - dt.date.fromisoformat(prev[-1]) == dt.timedelta(days=1)):
            prev.append(key)
        else:
            runs.append([key])
    return runs


def warehouse_summary(db_path: Path) -> list[tuple[str, int, int, str | None, str | None]]:
    """(table, partitions, rows, first partition, last partition) for every raw table."""
    out = []
    with warehouse.connect(db_path, read_only=True) as con:
        for c in DAILY_CONTRACTS + REFERENCE_CONTRACTS:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [c.source, c.table],
            ).fetchall()[0][0]
            if not exists:
                out.append((c.qualified_name, 0, 0, None, None))
                continue
            if c.partitioning is not None:
                n, rows, lo, hi = con.execute(
                    f"SELECT count(DISTINCT {warehouse.PARTITION_COLUMN}), count(*), "
                    f"CAST(min({warehouse.PARTITION_COLUMN}) AS VARCHAR), CAST(max({warehouse.PARTITION_COLUMN}) AS VARCHAR) "
                    f"FROM {c.qualified_name}"
                ).fetchall()[0]
            else:
                n, rows, lo, hi = 1, con.execute(f"SELECT count(*) FROM {c.qualified_name}").fetchall()[0][0], None, None
            out.append((c.qualified_name, n, rows, lo, hi))
    return out


def build_features(defs: dg.Definitions, instance: dg.DagsterInstance, full_refresh: bool = False) -> RunOutcome:
    """dbt build → feast apply → online store, in one run; ``full_refresh``: every day of the day-partitioned
    feature datasets rewritten (by default, only the days whose raw batches changed)."""
    return run_job(defs, instance, "build_features", tags={"batch_platform/trigger": "cli"},
                   stdout_log=step_log("build_features"),
                   ops_config={"dbt_feature_models": {"config": {"full_refresh": True}}} if full_refresh else None)


def step_log(job_name: str) -> Path:
    """Where the CLI sends what a job's steps print (dbt's console output, library warnings)."""
    return settings.data_dir() / "logs" / f"{job_name}.log"


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def latest_check(instance: dg.DagsterInstance, key: dg.AssetKey, check_name: str):
    """(passed, description) of the newest evaluation of an asset check, or None."""
    from batch_platform.defs.monitoring.history import check_evaluations

    evals = check_evaluations(instance, key, check_name)
    return (evals[0].passed, evals[0].description) if evals else None
