"""DuckDB allows one writing process per file. Warehouse writers must not collide: across the steps of a
multiprocess run, across concurrent runs, and with any other process (CLI, dbt) that opens the warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from batch_platform.lib import warehouse

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_two_concurrent_multiprocess_runs_finish_without_lock_errors(platform_env):
    with dg.DagsterInstance.get():  # create the instance's storage once, as `dagster dev` would
        pass
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrent_job", day],
            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for day in ("2013-01-02", "2013-01-03")
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
        assert "Could not set lock" not in out

    with warehouse.connect(platform_env["warehouse"], read_only=True) as con:
        loaded = con.execute(
            "SELECT table_name, partition_key FROM raw._batch_loads ORDER BY ALL"
        ).fetchall()
    assert loaded == [(t, d) for t in ("raw.flight_schedule", "raw.flights", "raw.weather")
                      for d in ("2013-01-02", "2013-01-03")]

    # What keeps the writers apart is the warehouse's own exclusive file lock (warehouse.connect waits for it):
    # no lock error above, every load present. The pool (limit 1, op granularity, the project's dagster.yaml) is
    # not relied on: on SQLite run storage, under load (two test workers on 2 cores), two steps of the two runs
    # were once seen to start 14 ms apart while the first still ran, a double claim of the single slot.


HOLDER = textwrap.dedent(
    """
    import sys, time
    from batch_platform.lib import warehouse
    with warehouse.connect(sys.argv[1]) as con:
        con.execute("CREATE TABLE IF NOT EXISTS t (x INT)")
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
        con.execute("INSERT INTO t VALUES (1)")
    """
)


def _hold(db: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], env=_env(),
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_without_the_lock_a_second_process_cannot_open_the_warehouse(tmp_path):
    """The failure the lock prevents: DuckDB refuses a second process outright."""
    db = tmp_path / "w.duckdb"
    holder = _hold(db, 3)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(db))
    finally:
        holder.wait(timeout=30)


def test_warehouse_connect_waits_for_the_other_process(tmp_path):
    db = tmp_path / "w.duckdb"
    holder = _hold(db, 1.5)
    t0 = time.monotonic()
    with warehouse.connect(db) as con:  # waits for the holder instead of failing
        waited = time.monotonic() - t0
        con.execute("INSERT INTO t VALUES (2)")
        assert con.execute("SELECT count(*) FROM t").fetchall()[0][0] == 2
    holder.wait(timeout=30)
    assert waited > 0.5


def test_lock_timeout_is_a_named_error(tmp_path):
    db = tmp_path / "w.duckdb"
    holder = _hold(db, 3)
    try:
        with pytest.raises(warehouse.WarehouseLockTimeout):
            with warehouse.connect(db, timeout_s=0.3):
                pass
    finally:
        holder.wait(timeout=30)
