"""Raw ingest throughput: validate + atomically load one flight day at scale 1 (baseline), 10 and 30.

Prints seconds per day and the ratio of time-per-row against the scale-1 baseline measured in the same run
(a ratio near 1 means the loader scales linearly with batch size; below 1, fixed costs amortize)."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from batch_platform.lib.contracts import FLIGHTS
from batch_platform.lib.ingest import ingest_batch
from batch_platform.lib.landing import daily_batch_path, replay

DAYS = [dt.date(2013, 3, d) for d in (4, 5, 6)]
SCALES = (1, 10, 30)


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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {s: measure(s, Path(tmp)) for s in SCALES}
    base_rows, base_s = results[1]
    print("\nraw ingest (validate + load), flights, 3 days")
    print(f"{'scale':>6} {'rows':>10} {'s/day':>8} {'rows/s':>10} {'time/row vs scale 1':>20}")
    for s, (rows, secs) in results.items():
        ratio = (secs / rows) / (base_s / base_rows)
        print(f"{s:>6} {rows:>10,} {secs / len(DAYS):>8.3f} {rows / secs:>10,.0f} {ratio:>20.2f}")


if __name__ == "__main__":
    main()
