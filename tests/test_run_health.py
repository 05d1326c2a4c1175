"""A killed process never wedges the platform: a run whose process is gone is recognised as dead, marked failed and
its warehouse-pool slot freed before the next run waits; a process waiting for the pool stops on SIGTERM and leaves
no queued step behind; ``batch-platform doctor`` reports and repairs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from batch_platform import run_health, settings
from batch_platform.lib import processes
from tests.conftest import project_dagster_home

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh instance with the project's pool configuration (one warehouse slot)."""
    home = project_dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(settings.DATA_DIR_VAR, str(tmp_path / "data"))
    return home


def _start(marker: Path, seconds: float, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.pool_holder", str(marker), str(seconds)], cwd=ROOT,
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=stderr, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.get()


def test_a_killed_holder_is_repaired_and_the_next_run_proceeds(home, tmp_path):
    holder = _start(tmp_path / "a.holding", 600)
    _wait_for(tmp_path / "a.holding", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    instance = _instance()
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.STARTED  # nobody reported its end
    assert run_health.run_process(run).pid == holder.pid
    health = run_health.examine(instance)
    assert [d.run_id for d in health.dead_runs] == [run.run_id]
    assert health.dead_runs[0].pools == [settings.WAREHOUSE_POOL]
    assert [e.claimed for e in run_health.pool_entries(instance)] == [True]  # the slot is still held

    nxt = _start(tmp_path / "b.holding", 0)
    out, err = nxt.communicate(timeout=120)  # before the repair this waited forever
    assert nxt.returncode == 0, err
    assert f"repaired: run {run.run_id[:8]} (hold_pool, STARTED): its process" in err
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert run_health.pool_entries(instance) == []
    assert not run_health.examine(instance).wedged


def test_sigterm_ends_a_wait_for_the_pool_and_leaves_no_waiter(home, tmp_path):
    holder = _start(tmp_path / "a.holding", 600)
    _wait_for(tmp_path / "a.holding", holder)
    log = tmp_path / "waiter.err"
    with log.open("w") as sink:
        waiter = _start(tmp_path / "b.holding", 0, stderr=sink)
    deadline = time.monotonic() + 90  # (its start-up loads the definitions: seconds, more on a loaded machine)
    while "waiting for pool duckdb_warehouse: held by run" not in log.read_text():
        assert waiter.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(2)  # inside its wait
    assert waiter.poll() is None and not (tmp_path / "b.holding").exists()
    waiter.send_signal(signal.SIGTERM)
    waiter.communicate(timeout=15)  # before: SIGTERM and Ctrl-C were ignored while waiting
    assert waiter.returncode == 130, log.read_text()

    instance = _instance()
    entries = run_health.pool_entries(instance)
    assert [(e.claimed, e.run_id) for e in entries] == [(True, instance.get_runs(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))[0].run_id)]  # only the live holder

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    third = _start(tmp_path / "c.holding", 0)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err  # the slot went to a live run, not to a dead waiter


def test_doctor_reports_then_repairs(home, tmp_path):
    holder = _start(tmp_path / "a.holding", 600)
    _wait_for(tmp_path / "a.holding", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    cli = [str(Path(sys.executable).parent / "batch-platform"), "doctor"]
    report = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert report.returncode == 1, report.stderr
    assert "found: run " in report.stdout and "its process (pid" in report.stdout
    assert "holding/queued in pool(s) duckdb_warehouse" in report.stdout
    fixed = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0 and "repaired: run " in fixed.stdout
    again = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "no dead run, no stale pool slot" in again.stdout


def test_a_reused_pid_is_not_taken_for_the_dead_process():
    me = processes.current()
    assert processes.is_alive(me) is True
    assert processes.is_alive(processes.ProcessIdentity(me.host, me.pid, "1")) is False  # same pid, other start
    assert processes.is_alive(processes.ProcessIdentity("another-host", me.pid, me.started)) is None
    child = subprocess.Popen(["sleep", "30"])
    started = processes.ProcessIdentity(me.host, child.pid, processes._start_time(child.pid))
    child.kill()
    child.wait()
    assert processes.is_alive(started) is False
