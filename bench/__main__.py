"""Run every benchmark: ``python -m bench`` (or ``make bench``). Each prints a table of ratios against a
baseline measured in the same run; exits non-zero when a figure with a target misses it."""

import sys

from bench import bench_drift, bench_ingest, bench_pit, bench_scoring

if __name__ == "__main__":
    bench_ingest.main()
    bench_scoring.main()
    figures = bench_pit.main() + bench_drift.main()
    sys.exit(0 if all(f["ok"] for f in figures) else 1)
