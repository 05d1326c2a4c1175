"""What every benchmark module reports, and how it is measured: medians with their spread, percentiles, the peak
RSS of a child process, and the figure dict the runner (``python -m bench``) prints and writes to RESULTS.md.

A figure is a dict::

    name        what was measured, with its size ("lookup p99, in-process, x10 (10,000 keys)")
    unit        of platform and raw: "s", "ms", "values/s"
    platform    the platform's figure (median over the runs)
    raw         the baseline's on the same data in the same run (None: an absolute target, or report only)
    ratio       platform / raw (for rates, where higher is better: platform rate / raw rate)
    target      the target in words ("<= 3x raw", ">= 0.5x raw", "<= 5 ms"), None: report only
    ok          whether the target is met and both sides gave identical results (None: report only)
    spread      {"platform": [min, max], "raw": [min, max]} over the runs
    peak_rss_mib  {"platform": MiB, "raw": MiB} where a process of its own was measured, else None
    note        anything the reader needs to read the figure right
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return seconds, result


def spread(values: Sequence[float]) -> list[float]:
    return [min(values), max(values)]


def figure(name: str, unit: str, platform: float, raw: float | None, *, target: str | None,
           meets: Callable[[float], bool] | None, identical: bool = True, absolute: bool = False,
           platform_runs: Sequence[float] = (), raw_runs: Sequence[float] = (),
           peak_rss_mib: dict[str, float] | None = None, note: str = "") -> dict:
    """A figure dict (module docstring). ``meets`` gets the ratio when there is a raw side (``absolute``: the
    platform figure all the same, the raw side shown for reference), else the platform figure; None: report
    only."""
    ratio = None if raw is None else platform / raw
    judged = platform if raw is None or absolute else ratio
    ok = None if meets is None else bool(identical and meets(judged))
    return {"name": name, "unit": unit, "platform": platform, "raw": raw, "ratio": ratio, "target": target,
            "ok": ok, "identical": identical,
            "spread": {"platform": spread(platform_runs) if platform_runs else None,
                       "raw": spread(raw_runs) if raw_runs else None},
            "peak_rss_mib": peak_rss_mib, "note": note}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# Forks and execs the command (argv[2:]), waits, writes "seconds exit-status peak-RSS-KiB" to the file descriptor
# argv[1]. A child's ru_maxrss starts from its parent's RSS at the fork, so the fork is done by this small
# interpreter, not by the benchmark's (hundreds of MiB once Feast is imported).
_LAUNCHER = ("import os, sys, time\n"
             "fd = int(sys.argv[1])\n"
             "os.set_inheritable(fd, False)\n"
             "t0 = time.perf_counter()\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    os.execvp(sys.argv[2], sys.argv[2:])\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "code = os.waitstatus_to_exitcode(status)\n"
             "os.write(fd, f'{time.perf_counter() - t0} {code} {usage.ru_maxrss}'.encode())\n")


def run_child(args: Sequence[str], **kwargs) -> tuple[float, int, int]:
    """Run a command to its end; (wall seconds from its fork to its exit, exit status, its own peak RSS in KiB)."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(write), *args], pass_fds=(write,),
                                **kwargs)
    finally:
        os.close(write)
    try:
        out = b""
        while chunk := os.read(read, 4096):
            out += chunk
    finally:
        os.close(read)
    if proc.wait():
        raise RuntimeError(f"launcher failed ({proc.returncode}): {args}")
    seconds, status, rss = out.decode().split()
    return float(seconds), int(status), int(rss)


def vm_hwm_kib(pid: int) -> int | None:
    """A running process's peak RSS (``VmHWM``), KiB; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
