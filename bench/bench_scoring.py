"""Batch scoring memory and throughput: one flight day's schedule replicated under new keys to 20k (baseline),
200k and 1M rows, scored in chunks of 20k rows, each run in a fresh process; plus the 200k and 1M days scored in one
chunk each, to show what chunking bounds.

Builds a small platform first (24 days, one spec with short windows, a trained champion) in a temporary folder.
Prints peak RSS and time per row as ratios against the 20k-row baseline of the same run."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from batch_platform.lib.feature_generations import published_relation
from batch_platform import settings
from batch_platform.lib import warehouse
from batch_platform.lib.contracts import REFERENCE_CONTRACTS
from batch_platform.lib.ingest import daily_batches, ingest_many
from batch_platform.lib.landing import daily_batch_path, reference_batch_path, replay
from batch_platform.lib.specs import DEFAULT_SPECS_DIR, SPECS_DIR_VAR

SPEC = "flight_delay"
FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 1, 24)
DAY = LAST + dt.timedelta(days=1)  # its schedule is loaded, its flights are not
CHUNK = 20_000
RUNS = [(20_000, CHUNK), (200_000, CHUNK), (1_000_000, CHUNK), (200_000, 200_000), (1_000_000, 1_000_000)]
REPO = Path(__file__).resolve().parent.parent


def build_platform(root: Path) -> dict[str, str]:
    import dagster as dg

    data = root / "data"
    env = {settings.DATA_DIR_VAR: str(data), SPECS_DIR_VAR: str(root / "specs")}
    os.environ.update(env)
    for var in (settings.WAREHOUSE_VAR, settings.LANDING_VAR, settings.QUARANTINE_VAR, settings.FEATURES_VAR,
                settings.FEAST_REGISTRY_VAR, settings.ONLINE_STORE_VAR, settings.ARTIFACTS_VAR, settings.REGISTRY_VAR):
        os.environ.pop(var, None)
    env |= settings.export_defaults()
    (root / "specs").mkdir()
    raw = yaml.safe_load((DEFAULT_SPECS_DIR / f"{SPEC}.yaml").read_text())
    raw["windows"] = {"train_days": 10, "validation_days": 4, "test_days": 4}
    (root / "specs" / f"{SPEC}.yaml").write_text(yaml.safe_dump(raw))
    landing, db, q = settings.landing_dir(), settings.warehouse_path(), settings.quarantine_dir()
    replay(landing, FIRST, LAST)
    batches = [(c, reference_batch_path(landing, c.table), None) for c in REFERENCE_CONTRACTS]
    batches += [(c, daily_batch_path(landing, c.table, d), d) for d, cs in daily_batches(FIRST, LAST) for c in cs]
    ingest_many(db, batches, quarantine_dir=q)
    from batch_platform.definitions import defs as lazy_defs

    defs = lazy_defs()
    # dbt's log of the set-up build would land in the printed table (RESULTS.md keeps what this module prints)
    with dg.instance_for_test() as instance, contextlib.redirect_stdout(io.StringIO()):
        for job in ("build_features", "train_gate_promote"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False).success, job
    return env


def replicate(rows: int) -> int:
    with warehouse.connect(settings.warehouse_path()) as con:
        con.execute("CREATE TABLE IF NOT EXISTS marts._bench_day AS SELECT * FROM marts.flight_schedule "
                    "WHERE flight_date = ?", [DAY])
        per_day = con.execute("SELECT count(*) FROM marts._bench_day").fetchall()[0][0]
        schedule = published_relation(con, "marts.flight_schedule")
        con.execute(f"DELETE FROM {schedule} WHERE flight_date = ?", [DAY])
        con.execute(f"INSERT INTO {schedule} SELECT s.* REPLACE (s.flight_id || '_c' || t.c AS flight_id) "
                    "FROM marts._bench_day s, range(?) t(c)", [max(1, round(rows / per_day))])
        return con.execute("SELECT count(*) FROM marts.flight_schedule WHERE flight_date = ?", [DAY]).fetchall()[0][0]


def score(env: dict[str, str], chunk: int, report: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.scoring_child", SPEC, DAY.isoformat(), "--chunk-rows",
                          str(chunk), "--report", str(report)], cwd=REPO, env={**os.environ, **env,
                          "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(report.read_text()) | {"seconds": time.perf_counter() - t0}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("\nbatch scoring (one day, spine replicated), each run in a fresh process", flush=True)
        env = build_platform(root)
        results = []
        for rows, chunk in RUNS:
            n = replicate(rows)
            results.append((n, chunk, score(env, chunk, root / f"r-{rows}-{chunk}.json")))
    base_rows, _, base = results[0]
    print(f"{'rows':>10} {'chunk':>8} {'peak RSS MiB':>13} {'RSS vs base':>12} {'s':>7} {'rows/s':>9} "
          f"{'time/row vs base':>17}")
    for n, chunk, r in results:
        print(f"{n:>10,} {chunk:>8,} {r['peak_rss_kib'] / 1024:>13,.0f} {r['peak_rss_kib'] / base['peak_rss_kib']:>12.2f} "
              f"{r['seconds']:>7.1f} {n / r['seconds']:>9,.0f} "
              f"{(r['seconds'] / n) / (base['seconds'] / base_rows):>17.2f}")


if __name__ == "__main__":
    main()
