"""Which process a run lives in, and whether that process is still there.

A run records its process as ``host``, ``pid`` and the process's start time (``/proc/<pid>/stat``, field 22, in
clock ticks since boot): a pid reused by a later process has another start time, so a dead run is never taken for
alive. Only processes of this host can be judged; a run of another host is left to that host.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    started: str  # start time in clock ticks since boot ("" where /proc is unavailable)

    def as_tags(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}host": self.host, f"{prefix}pid": str(self.pid), f"{prefix}pid_started": self.started}

    @classmethod
    def from_tags(cls, tags: dict[str, str], prefix: str) -> ProcessIdentity | None:
        try:
            return cls(tags[f"{prefix}host"], int(tags[f"{prefix}pid"]), tags.get(f"{prefix}pid_started", ""))
        except (KeyError, ValueError):
            return None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces: count fields after its closing one
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def current() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), pid, _start_time(pid) or "")


def is_alive(identity: ProcessIdentity) -> bool | None:
    """True/False for a process of this host (a zombie counts as gone); None for another host's."""
    if identity.host != socket.gethostname():
        return None
    started = _start_time(identity.pid)
    if started is None:
        if os.path.isdir("/proc"):
            return False
        try:  # no /proc: existence only
            os.kill(identity.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if identity.started and started and started != identity.started:
        return False  # the pid was reused
    try:
        with open(f"/proc/{identity.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    except OSError:
        pass
    return True


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``), so that a
    child (dbt) never outlives a killed step and keeps writing on its own. No-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
