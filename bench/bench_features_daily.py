"""A day's feature build as history grows: the incremental build of one new day against a full refresh of the same
data, at 1, 3, 6 and 12 months of history (the 2013 replay; ``BENCH_DAILY_SCALE`` copies, default 1).

One data dir, days landed once (outside the clock). Per point of history ``H``: the days before day ``H`` are
ingested and built (not timed), then day ``H`` is ingested and ``batch-platform features`` runs (dbt build with its
tests, feast apply, online store): the incremental build, which rewrites the new day only. Then ``features
--full-refresh`` rebuilds every day of the same data. Each row shows the feature job's own time (as the command
prints it: the run, not the process start-up) and, from dbt's run results, dbt's wall time and the summed execution
time of the day-keyed models (the trailing-window tables and the feature datasets) and of the data tests. Not a
target: a table printed into the results file. The incremental column stays flat while the full refresh grows with
history; what still grows in the incremental build is what reads all history by design (dbt's data tests over whole
tables, the label and schedule tables, Feast's apply).

    python -m bench --only features_daily --results bench/RESULTS_INCREMENTAL.md
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from bench import bench_pipeline

POINTS = [int(d) for d in os.environ.get("BENCH_DAILY_DAYS", "31,91,182,364").split(",")]
SCALE = int(os.environ.get("BENCH_DAILY_SCALE", "1"))
START = dt.date(2013, 1, 1)
DAY_KEYED = ("int_plane_daily_windows", "int_route_daily_windows", "int_carrier_daily_windows",
             "int_origin_weather_trailing_24h", "plane_daily_features", "route_daily_features",
             "carrier_daily_features", "origin_weather_features")


def _cli(args: list[str], env: dict[str, str], log) -> str:
    out = subprocess.run([bench_pipeline.CLI, *args], env=env, capture_output=True, text=True)
    log.write(out.stdout + out.stderr)
    if out.returncode:
        raise RuntimeError(f"batch-platform {' '.join(args)} exited {out.returncode}:\n{out.stdout[-2000:]}")
    return out.stdout


def _features(args: list[str], env: dict[str, str], data: Path, log) -> dict[str, float]:
    """Run a feature build; its job seconds and dbt's figures."""
    printed = _cli(["features", *args], env, log)
    job = float(re.search(r"^Features .*: ok \(run \S+, ([0-9.]+)s\)", printed, re.MULTILINE)[1])
    results = json.loads((bench_pipeline._dbt_build_folder(data) / "run_results.json").read_text())
    nodes = results["results"]
    return {
        "job": job,
        "dbt": results["elapsed_time"],
        "day_keyed": sum(r["execution_time"] for r in nodes if r["unique_id"].split(".")[-1] in DAY_KEYED),
        "tests": sum(r["execution_time"] for r in nodes if r["unique_id"].startswith("test.")),
    }


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        last = START + dt.timedelta(days=max(POINTS) - 1)
        landing = root / "landing"
        subprocess.run([bench_pipeline.CLI, "land", "--start", START.isoformat(), "--end", last.isoformat(),
                        "--scale", str(SCALE), "--landing-dir", str(landing)],
                       env=bench_pipeline._env(root / "land-data", root / "land-home"), check=True,
                       stdout=subprocess.DEVNULL)
        data, home = bench_pipeline._fresh(root / "platform", landing)
        env = bench_pipeline._env(data, home)
        done = START - dt.timedelta(days=1)
        with open(root / "cli.log", "w") as log:
            for history in sorted(POINTS):
                day = START + dt.timedelta(days=history - 1)
                if day - dt.timedelta(days=1) > done:  # catch up (not timed)
                    _cli(["ingest", "--start", (done + dt.timedelta(days=1)).isoformat(),
                          "--end", (day - dt.timedelta(days=1)).isoformat()], env, log)
                    _cli(["features"], env, log)
                _cli(["ingest", "--start", day.isoformat(), "--end", day.isoformat()], env, log)
                incremental = _features([], env, data, log)
                full = _features(["--full-refresh"], env, data, log)
                rows.append({"history": history, "day": day.isoformat(), "incremental": incremental, "full": full})
                done = day
    return rows


def print_results(rows: list[dict]) -> None:
    print(f"\na day's feature build as history grows (2013 replay x{SCALE}): the incremental build of the new day "
          "against a full refresh of the same data; seconds")
    print(f"{'history':>8} {'new day':>10} | {'incremental: job':>16} {'dbt':>6} {'day-keyed':>9} {'tests':>6} | "
          f"{'full refresh: job':>17} {'dbt':>6} {'day-keyed':>9} {'tests':>6}")
    for r in rows:
        i, f = r["incremental"], r["full"]
        print(f"{r['history']:>6} d {r['day']:>10} | {i['job']:>16.1f} {i['dbt']:>6.1f} {i['day_keyed']:>9.2f} "
              f"{i['tests']:>6.2f} | {f['job']:>17.1f} {f['dbt']:>6.1f} {f['day_keyed']:>9.2f} {f['tests']:>6.2f}")
    print("job: the feature run (dbt build with its tests, feast apply, online store) as `features` prints it; dbt: "
          "dbt's wall time; day-keyed: summed execution time of the 8 models keyed on a day (windows tables, feature "
          "datasets); tests: summed time of dbt's data tests (dbt runs 2 threads: sums can exceed the wall time)")


def main() -> None:
    print_results(run())


if __name__ == "__main__":
    main()
