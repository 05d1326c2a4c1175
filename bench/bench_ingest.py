"""Raw ingest throughput and memory.

Throughput: validate + atomically load one flight day at scale 1 (baseline), 10 and 30. Prints seconds per day and
the ratio of time-per-row against the scale-1 baseline measured in the same run (a ratio near 1 means the loader
scales linearly with batch size; below 1, fixed costs amortize).

Memory: one flight day of 1 (baseline) to 2250 copies (~220 MB of CSV), each ingested in a fresh process
(``bench/ingest_child.py``), against a bare load of the same file in a fresh process (DuckDB ``read_csv`` +
``INSERT``, no checks). Prints peak RSS, its ratio to the platform's at scale 1 (bounded: it stops growing once
DuckDB reaches its cap) and to the bare load's."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batch_platform.lib.contracts import FLIGHTS
from batch_platform.lib.ingest import ingest_batch
from batch_platform.lib.landing import daily_batch_path, replay

DAYS = [dt.date(2013, 3, d) for d in (4, 5, 6)]
SCALES = (1, 10, 30)
MEMORY_SCALES = (1, 10, 40, 400, 2250)
REPO = Path(__file__).resolve().parent.parent


def measure(scale: int, root: Path) -> tuple[int, float]:
    landing = root / f"landing-{scale}"
    replay(landing, DAYS[0], DAYS[-1], scale=scale, tables=["flights"])
    db = root / f"w-{scale}.duckdb"
    rows, seconds = 0, 0.0
    for day in DAYS:
        t0 = time.perf_counter()
        res = ingest_batch(db, FLIGHTS, daily_batch_path(landing, "flights", day), day, quarantine_dir=root / "q")
        seconds += time.perf_counter() - t0
        rows += res.load.rows
    return rows, seconds


def peak(root: Path, path: Path, day: dt.date, *, raw: bool) -> dict:
    """Ingest ``path`` in a fresh process (``raw``: the bare load); its report (rows, seconds, peak RSS)."""
    tag = f"{path.parent.parent.name}-{'raw' if raw else 'platform'}"
    report = root / f"{tag}.json"
    subprocess.run([sys.executable, "-m", "bench.ingest_child", "flights", str(path), day.isoformat(),
                    str(root / f"{tag}.duckdb"), str(root / "q"), "--report", str(report), *(["--raw"] if raw else [])],
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    return json.loads(report.read_text())


def measure_memory(root: Path) -> list[tuple[int, int, dict, dict]]:
    day, out = DAYS[0], []
    for scale in MEMORY_SCALES:
        landing = root / f"landing-m{scale}"
        replay(landing, day, day, scale=scale, tables=["flights"])
        path = daily_batch_path(landing, "flights", day)
        out.append((scale, path.stat().st_size, peak(root, path, day, raw=False), peak(root, path, day, raw=True)))
        path.unlink()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {s: measure(s, Path(tmp)) for s in SCALES}
        memory = measure_memory(Path(tmp))
    base_rows, base_s = results[1]
    print("\nraw ingest (validate + load), flights, 3 days")
    print(f"{'scale':>6} {'rows':>10} {'s/day':>8} {'rows/s':>10} {'time/row vs scale 1':>20}")
    for s, (rows, secs) in results.items():
        ratio = (secs / rows) / (base_s / base_rows)
        print(f"{s:>6} {rows:>10,} {secs / len(DAYS):>8.3f} {rows / secs:>10,.0f} {ratio:>20.2f}")

    print("\nraw ingest peak memory, flights, one day, each load in a fresh process (MiB)")
    print(f"{'scale':>6} {'CSV MB':>8} {'rows':>10} {'peak':>7} {'vs scale 1':>11} {'bare load':>10} "
          f"{'vs bare':>8} {'s':>6} {'bare s':>7}")
    base = memory[0][2]["peak_rss_kib"]
    for scale, size, platform, bare in memory:
        mine, theirs = platform["peak_rss_kib"], bare["peak_rss_kib"]
        print(f"{scale:>6} {size / 1e6:>8.1f} {platform['rows']:>10,} {mine / 1024:>7.0f} {mine / base:>11.2f} "
              f"{theirs / 1024:>10.0f} {mine / theirs:>8.2f} {platform['seconds']:>6.1f} {bare['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
