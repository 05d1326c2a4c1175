"""Child process of the ingest memory test and of the ingest benchmark: ingest one landed batch into a warehouse,
in a process of its own so its peak RSS is the ingest's alone.

    python -m bench.ingest_child <table> <file> <day|-> <warehouse> <quarantine_dir> --report FILE [--raw]
        [--memory-limit 64MB]

The platform's ingest (:func:`batch_platform.lib.ingest.ingest_batch`: validation, then the partition replaced),
capped at ``--memory-limit`` (default: the platform's), or with ``--raw`` the baseline a bare loader would do:
DuckDB ``read_csv`` with the contract's column types and one ``INSERT`` of the same file, no checks. ``--report`` writes JSON with the rows loaded, the seconds taken and the
peak RSS (``VmHWM``, KiB: this process's own; ``ru_maxrss`` would count the parent's RSS at the fork too).
"""

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import duckdb

from batch_platform.lib.contracts import CONTRACTS
from batch_platform.lib.ingest import ingest_batch


def raw_load(contract, path: Path, db: Path) -> int:
    """The baseline: the file typed by DuckDB's CSV reader and inserted, nothing validated."""
    types = ", ".join(f"'{c.name}': '{c.type}'" for c in contract.columns)
    cols = ", ".join(f'"{c.name}" {c.type}' for c in contract.columns)
    con = duckdb.connect(str(db))
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS loaded ({cols})")
        con.execute(f"INSERT INTO loaded SELECT * FROM read_csv('{path}', header = true, columns = {{{types}}}, "
                    "nullstr = ['', 'NA'], auto_detect = false)")
        return con.execute("SELECT count(*) FROM loaded").fetchall()[0][0]
    finally:
        con.close()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("table")
    p.add_argument("file", type=Path)
    p.add_argument("day")
    p.add_argument("warehouse", type=Path)
    p.add_argument("quarantine_dir", type=Path)
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--raw", action="store_true")
    p.add_argument("--memory-limit", default=None)
    args = p.parse_args()
    contract = CONTRACTS[args.table]
    day = None if args.day == "-" else dt.date.fromisoformat(args.day)
    t0 = time.perf_counter()
    if args.raw:
        rows = raw_load(contract, args.file, args.warehouse)
    else:
        cap = {"memory_limit": args.memory_limit} if args.memory_limit else {}
        rows = ingest_batch(args.warehouse, contract, args.file, day, quarantine_dir=args.quarantine_dir,
                            **cap).load.rows
    args.report.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0,
                                       "peak_rss_kib": peak_rss_kib()}))


if __name__ == "__main__":
    main()
