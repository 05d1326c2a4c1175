"""Run every benchmark: ``python -m bench`` (or ``make bench``). Prints one table of figures, platform against raw
on the same data in the same run, writes ``bench/RESULTS.md`` (the machine, the command, the date, the commit,
every figure) and exits non-zero when a figure with a target misses it (or a benchmark fails).

    python -m bench [--only NAME ...] [--quick] [--results FILE]

Each benchmark module runs in a process of its own, so its peak RSS is its own (reported on figures that do not
measure one of their own: both sides of such a figure ran in that process). ``--quick``: smaller sizes and fewer
runs (a check that everything runs, not figures to quote); the benchmarks that build a platform or land large
files are skipped unless named with ``--only``. The pipeline at x1/x10/x30 (``scale``, ~25 min), a day's
feature build as history grows (``features_daily``) and the quality of models trained on a Dask cluster against the
local path's over seeds (``dask_quality``) run only when named:
``python -m bench --only scale --results bench/RESULTS_SCALE.md``,
``python -m bench --only features_daily --results bench/RESULTS_INCREMENTAL.md``,
``python -m bench --only dask_quality --results bench/RESULTS_DASK_QUALITY.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.measure import run_child
from bench.report import machine, normalized, print_table, write_results

# name (bench/bench_<name>.py) -> (returns figures; else prints a table, no target, kept as text in RESULTS.md,
# builds a platform or lands large files: skipped by --quick unless named with --only)
MODULES = {"serving": (True, False), "online_writes": (True, False), "pit": (True, False), "drift": (True, False),
           "training": (True, False), "scoring_asset": (True, True), "ingest": (False, True),
           "scoring": (False, True), "pipeline": (True, True), "scale": (False, True),
           "features_daily": (False, True), "dask_quality": (False, True)}
NAMED_ONLY = ("scale", "features_daily", "dask_quality")
"""Run only when named with ``--only``, each keeping its table in a results file of its own: ``scale``
(``bench/RESULTS_SCALE.md``), ``features_daily`` (``bench/RESULTS_INCREMENTAL.md``) and ``dask_quality``
(``bench/RESULTS_DASK_QUALITY.md``)."""
OWN_QUICK = ("serving", "online_writes", "training", "scoring_asset", "pipeline")  # main(quick); the others: _quick()
REPO = Path(__file__).resolve().parent.parent
NOT_MEASURED: dict[str, str] = {}  # figure -> why it has no benchmark yet


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _quick(name: str, module) -> None:
    """Smaller sizes for the modules that have no --quick of their own."""
    if name == "pit":
        module.SCALES, module.REPEATS = {"x1": 8, "x10": 80}, 3
    elif name == "drift":
        module.SIZES = module.SIZES[:2]


def child(name: str, quick: bool, out: Path) -> None:
    """Run one module here; write its figures (or its printed table) to ``out``."""
    import importlib

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # feature files are written after the repository is applied: Feast's warning that they are not there yet
    logging.getLogger("feast.infra.offline_stores.file_source").setLevel(logging.ERROR)
    module = importlib.import_module(f"bench.bench_{name}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
        if name in OWN_QUICK:
            figures = module.main(quick)
        else:
            if quick:
                _quick(name, module)
            figures = module.main()
    out.write_text(json.dumps({"figures": figures or [], "printed": printed.getvalue()},
                              default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", choices=sorted(MODULES), help="run only this benchmark (repeatable)")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes, fewer runs; skips the heavy benchmarks unless named with --only")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="where to write the results")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.quick, args.out)
        return 0

    names = args.only or [n for n in MODULES if n not in NAMED_ONLY]
    skipped = {n: "skipped with --quick (it builds a platform or lands up to 220 MB of CSV; --only runs it)"
               for n in names if args.quick and MODULES[n][1] and not args.only}
    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    host = machine()
    figures, tables, failed = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in skipped:
                continue
            out = Path(tmp) / f"{name}.json"
            path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            argv = [sys.executable, "-m", "bench", "--child", name, "--out", str(out)]
            _, status, rss_kib = run_child(argv + (["--quick"] if args.quick else []), cwd=REPO,
                                           env={**os.environ, "PYTHONPATH": path})
            if status or not out.exists():
                failed[name] = f"exit status {status} (its output above)"
                continue
            result = json.loads(out.read_text())
            for f in map(normalized, result["figures"]):
                if not f.get("peak_rss_mib"):
                    f["peak_rss_mib"] = {"module": round(rss_kib / 1024, 1)}
                figures.append(f)
            if not MODULES[name][0]:
                tables[name] = result["printed"]
    quick = "--quick: sizes reduced, " if args.quick else ""
    print_table(f"all figures ({quick}median of runs; ratio = platform / raw)", figures)
    command = " ".join(["python -m bench", *sys.argv[1:]])
    not_measured = {**NOT_MEASURED, **skipped}
    write_results(args.results, command=command, started=started, seconds=time.perf_counter() - t0, host=host,
                  figures=figures, tables=tables, not_measured=not_measured, failed=failed, quick=args.quick)
    missed = [f["name"] for f in figures if f["ok"] is False]
    print(f"\n{len(missed)} figure(s) missed their target{': ' + '; '.join(missed) if missed else ''}; "
          f"{len(failed)} benchmark(s) failed{': ' + ', '.join(failed) if failed else ''}. Written: {args.results}")
    return 1 if missed or failed else 0


if __name__ == "__main__":
    sys.exit(main())
