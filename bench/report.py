"""Figures as a table on the terminal and as ``bench/RESULTS.md`` (the machine, the command, the date, the commit,
one row per figure). Figures in the older dict form (``platform_s``/``raw_s``/``*_spread_s``: bench_pit,
bench_drift) are read as figures in seconds."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def normalized(f: dict) -> dict:
    """A figure in :mod:`bench.measure`'s form."""
    if "unit" in f:
        return f
    target = f.get("target")
    if isinstance(target, (int, float)):
        target = f"<= {target:g}x raw"
    identical = f.get("rows_identical", f.get("verdicts_identical", True))
    name = f["name"] if "rows" not in f or "(" in f["name"] else f"{f['name']} ({f['rows']:,} rows)"
    return {"name": name, "unit": "s", "platform": f["platform_s"], "raw": f["raw_s"], "ratio": f["ratio"],
            "target": target, "ok": f["ok"], "identical": identical,
            "spread": {"platform": f.get("platform_spread_s"), "raw": f.get("raw_spread_s")},
            "peak_rss_mib": f.get("peak_rss_mib"), "note": f.get("note", "")}


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "values/s":
        return f"{v:,.0f}"
    return f"{v:.3f}" if unit == "ms" or v < 100 else f"{v:,.0f}"


def _spread(pair: list[float] | None, unit: str) -> str:
    return "-" if not pair else f"{_num(pair[0], unit)}..{_num(pair[1], unit)}"


def _rss(r: dict | None) -> str:
    if not r:
        return "-"
    return " / ".join(f"{k} {v:,.0f}" for k, v in r.items())


def _verdict(f: dict) -> str:
    if f["ok"] is None:
        return "report" if f.get("identical", True) else "DIFFER"
    if not f.get("identical", True):
        return "DIFFER"
    return "ok" if f["ok"] else "MISS"


def rows(figures: list[dict]) -> list[list[str]]:
    out = []
    for f in map(normalized, figures):
        u = f["unit"]
        out.append([f["name"], u, _num(f["platform"], u), _spread(f["spread"]["platform"], u), _num(f["raw"], u),
                    _spread(f["spread"]["raw"], u), "-" if f["ratio"] is None else f"{f['ratio']:.2f}",
                    f["target"] or "-", _verdict(f), _rss(f["peak_rss_mib"])])
    return out


HEAD = ["figure", "unit", "platform", "spread", "raw", "spread", "ratio", "target", "ok", "peak RSS MiB"]


def print_table(title: str, figures: list[dict]) -> None:
    table = [HEAD, *rows(figures)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    print(f"\n{title}")
    for r in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for f in map(normalized, figures):
        if f.get("note"):
            print(f"  - {f['name']}: {f['note']}")


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
            ram = f"{kib / 1024 ** 2:.1f} GiB"
    except (OSError, StopIteration):
        pass
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    return {"CPU": cpu, "cores": str(os.cpu_count()), "RAM": ram, "OS": platform.platform(),
            "Python": platform.python_version(), "load average at the start (1, 5, 15 min)": load}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def write_results(path: Path, *, command: str, started: dt.datetime, seconds: float, host: dict[str, str],
                  figures: list[dict], tables: dict[str, str], not_measured: dict[str, str],
                  failed: dict[str, str], quick: bool = False) -> None:
    figures = [normalized(f) for f in figures]
    missed = [f["name"] for f in figures if f["ok"] is False]
    lines = ["# Benchmark results", "",
             f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC ({seconds / 60:.1f} min), commit {commit()}.",
             *(["", "**--quick: sizes reduced and fewer runs; these are not figures to quote.**"] if quick else []),
             "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in host.items()]
    lines += ["", "## Figures", "",
              "Platform and raw on the same data in the same run; medians over the runs with the spread (min..max); "
              "ratio = platform / raw (for rates: platform rate / raw rate). *ok*: the target is met and both sides "
              "gave identical results; *report*: no target. Peak RSS where a process of its own was measured.", "",
              "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(figures)]
    notes = [f"- {f['name']}: {f['note']}" for f in figures if f.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", f"**{len(missed)} figure(s) missed their target**" + (": " + "; ".join(missed) if missed else "."),
              ""]
    if failed:
        lines += ["## Benchmarks that failed", ""] + [f"- {k}: {v}" for k, v in failed.items()] + [""]
    if not_measured:
        lines += ["## Not measured", ""] + [f"- {k}: {v}" for k, v in not_measured.items()] + [""]
    for title, text in tables.items():
        lines += [f"## {title} (printed table, no target)", "", "```", text.strip("\n"), "```", ""]
    path.write_text("\n".join(lines))
