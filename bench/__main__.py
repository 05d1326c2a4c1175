"""Run every benchmark: ``python -m bench`` (or ``make bench``). Each prints a table of ratios against a
baseline measured in the same run."""

from bench import bench_ingest, bench_scoring

if __name__ == "__main__":
    bench_ingest.main()
    bench_scoring.main()
