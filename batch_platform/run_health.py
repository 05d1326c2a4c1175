"""Runs whose process is gone, and the pool slots they hold: found, reported and repaired.

Every run records the process that executes its steps (tags ``batch_platform/process_host``, ``…_pid``,
``…_pid_started``: set by the CLI when it launches a run in its own process, and by the platform's executor in a
run worker the daemon launched). A run still STARTING/STARTED/CANCELING whose process no longer exists on this host
was killed (SIGKILL, OOM, a power cut): it is marked failed, and its claimed slots and queued steps in every pool
are freed, so the next step is not blocked forever by a holder that will never return. Slots and queued steps of
runs that already ended (or no longer exist) are freed as well.

Used before every CLI command that launches runs (an ingest with nothing left to load included), while the CLI
waits for the warehouse pool, by the sensor ``dead_run_repair`` under the daemon, and by ``batch-platform doctor``.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._utils.interrupts import check_captured_interrupt

from batch_platform.lib import processes

PROCESS_TAG_PREFIX = "batch_platform/process_"
EXECUTING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def process_tags() -> dict[str, str]:
    """The tags naming the current process as the one executing a run."""
    return processes.current().as_tags(PROCESS_TAG_PREFIX)


def run_process(run: dg.DagsterRun) -> processes.ProcessIdentity | None:
    return processes.ProcessIdentity.from_tags(dict(run.tags), PROCESS_TAG_PREFIX)


@dataclass
class DeadRun:
    run_id: str
    job_name: str
    status: str
    process: processes.ProcessIdentity
    pools: list[str]  # pools in which it holds or waits for a slot

    def describe(self) -> str:
        held = f", holding/queued in pool(s) {', '.join(self.pools)}" if self.pools else ""
        return f"run {self.run_id[:8]} ({self.job_name}, {self.status}): its process ({self.process}) is gone{held}"


@dataclass
class PoolEntry:
    pool: str
    run_id: str
    step_key: str
    claimed: bool  # False: queued, waiting for a slot


@dataclass
class Health:
    dead_runs: list[DeadRun] = field(default_factory=list)
    orphaned: list[PoolEntry] = field(default_factory=list)  # slots/queued steps of runs that ended or are gone
    unknown: list[str] = field(default_factory=list)  # in-progress runs whose process cannot be judged here

    @property
    def wedged(self) -> bool:
        return bool(self.dead_runs or self.orphaned)

    def lines(self) -> list[str]:
        out = [d.describe() for d in self.dead_runs]
        out += [f"pool {e.pool}: {'slot held' if e.claimed else 'queued step'} by run {e.run_id[:8]} "
                f"({e.step_key}), which is no longer in progress" for e in self.orphaned]
        return out


def pool_entries(instance: dg.DagsterInstance) -> list[PoolEntry]:
    storage = instance.event_log_storage
    entries = []
    for key in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(key)
        entries += [PoolEntry(key, s.run_id, s.step_key, True) for s in info.claimed_slots]
        entries += [PoolEntry(key, p.run_id, p.step_key, False) for p in info.pending_steps
                    if not any(s.run_id == p.run_id and s.step_key == p.step_key for s in info.claimed_slots)]
    return entries


def examine(instance: dg.DagsterInstance) -> Health:
    """What is stale, without changing anything."""
    health = Health()
    entries = pool_entries(instance)
    not_finished = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(statuses=list(NOT_FINISHED_STATUSES)))}
    for run in not_finished.values():
        if run.status not in EXECUTING:
            continue
        identity = run_process(run)
        alive = processes.is_alive(identity) if identity else None
        if alive is None:
            health.unknown.append(run.run_id)
        elif not alive:
            pools = sorted({e.pool for e in entries if e.run_id == run.run_id})
            health.dead_runs.append(DeadRun(run.run_id, run.job_name, run.status.value, identity, pools))
    health.orphaned = [e for e in entries if e.run_id not in not_finished]
    return health


def repair(instance: dg.DagsterInstance, health: Health | None = None) -> Health:
    """Mark dead runs failed and free every pool entry of dead or ended runs; returns what was found (and fixed)."""
    health = health or examine(instance)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for dead in health.dead_runs:
        run = instance.get_run_by_id(dead.run_id)
        if run is not None and run.status in EXECUTING:
            instance.report_run_failed(
                run, message=f"Marked failed by batch_platform at {now}: the process executing this run "
                             f"({dead.process}) no longer exists (killed?). Its pool slots were freed.")
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
    for run_id in sorted({e.run_id for e in health.orphaned}):
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return health


def repair_and_report(instance: dg.DagsterInstance, echo=print) -> Health:
    """:func:`repair` what :func:`examine` finds, each repair echoed as one line."""
    health = examine(instance)
    if health.wedged:
        repair(instance, health)
        for line in health.lines():
            echo(f"  repaired: {line}")
    return health


def _pool_free(instance: dg.DagsterInstance, pool: str) -> tuple[bool, list[PoolEntry]]:
    info = instance.event_log_storage.get_concurrency_info(pool)
    limit = info.limit if info.limit is not None else info.slot_count
    holders = [e for e in pool_entries(instance) if e.pool == pool]
    return len(info.claimed_slots) < max(limit, 1) and not info.pending_steps, holders


def describe_holders(instance: dg.DagsterInstance, holders: list[PoolEntry]) -> str:
    parts = []
    for e in holders:
        run = instance.get_run_by_id(e.run_id)
        what = f"{run.job_name}, {run.status.value}" if run else "no such run"
        proc = run_process(run) if run else None
        parts.append(f"{'held' if e.claimed else 'queued'} by run {e.run_id[:8]} ({what}"
                     f"{', ' + str(proc) if proc else ''}) step {e.step_key}")
    return "; ".join(parts) or "no holder recorded"


def wait_for_pool(instance: dg.DagsterInstance, pool: str, echo=print, poll_s: float = 1.0,
                  timeout_s: float | None = None) -> float:
    """Block until ``pool`` has a free slot and nobody queued for it, repairing dead holders on the way; returns
    the seconds waited. Runs in the caller's thread with normal signal handling: Ctrl-C / SIGTERM end the wait
    (KeyboardInterrupt). ``timeout_s``: raise :class:`PoolWaitTimeout` after that long."""
    start = time.monotonic()
    announced = False
    while True:
        repair_and_report(instance, echo)
        free, holders = _pool_free(instance, pool)
        if free:
            return time.monotonic() - start
        if not announced:
            echo(f"  waiting for pool {pool}: {describe_holders(instance, holders)} — Ctrl-C stops waiting; `batch-platform doctor` shows and repairs what holds it")
            announced = True
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise PoolWaitTimeout(f"pool {pool} still busy after {timeout_s:.0f} s: "
                                  f"{describe_holders(instance, holders)}")
        time.sleep(poll_s)


class PoolWaitTimeout(TimeoutError):
    pass


class InterruptWatch:
    """While a run executes in this process (Dagster defers SIGINT/SIGTERM to its own checkpoints, and a step
    queued for a pool slot never reaches one), end the process when an interrupt arrives and the run holds no
    slot: its queued steps are removed and the run marked canceled first, so no dead waiter is left in the queue.
    A run that holds a slot is left to Dagster's own interrupt handling."""

    def __init__(self, instance: dg.DagsterInstance, echo=print, poll_s: float = 0.3):
        self.instance, self.echo, self.poll_s = instance, echo, poll_s
        self.run_ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="interrupt-watch", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if not check_captured_interrupt():
                continue
            runs = self.instance.get_runs(dg.RunsFilter(statuses=list(EXECUTING),
                                                        tags={k: v for k, v in process_tags().items()}))
            entries = pool_entries(self.instance)
            mine = {r.run_id: r for r in runs}
            if any(e.claimed and e.run_id in mine for e in entries):
                continue  # a step is running: Dagster interrupts it itself
            for run in mine.values():
                self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
                self.instance.report_run_canceled(run, message="Interrupted (SIGINT/SIGTERM) while waiting for a "
                                                               "pool slot; nothing was written.")
            self.echo("interrupted while waiting for a pool slot: run canceled, nothing was written")
            os._exit(130)
