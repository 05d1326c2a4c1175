"""Measuring a block of work: wall time and the process's peak resident memory while it ran (sampled from
``/proc``), for the training step's metadata and the operational SLIs."""

from __future__ import annotations

import os
import resource
import threading
import time

class PeakRss:
    """The peak resident set size of this process while the ``with`` block runs, sampled by a thread every
    ``interval_s`` (``/proc/self/statm``). ``resource.getrusage(...).ru_maxrss`` is the peak over the process's whole
    life: in a process that ran other steps before, it says nothing about this block. Without ``/proc`` the
    lifetime peak is all there is: ``peak_mb`` is then that, and ``increase_mb`` only what the block added to it (a
    lower bound). A spike shorter than the interval can be missed."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc = os.path.exists("/proc/self/statm")

    def rss_mb(self) -> float:
        if self._proc:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    @property
    def increase_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)
