"""Run a command with its memory capped: in a memory cgroup of its own (RAM, and swap where the machine has it;
cgroup v1 or v2, as root), else under ``RLIMIT_DATA`` (its private writable memory: heap and anonymous maps)."""

from __future__ import annotations

import os
import resource
import subprocess
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup(limit: int) -> Path | None:
    """A new memory cgroup capped at ``limit`` bytes, or ``None`` when none can be made here."""
    name = f"batch_platform_test_{uuid.uuid4().hex[:8]}"
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():  # v2
            group = CGROUP_ROOT / name
            group.mkdir()
            (group / "memory.max").write_text(str(limit))
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
            return group
        group = CGROUP_ROOT / "memory" / name  # v1
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        return group
    except OSError:
        return None


def run_capped(cmd: list[str], limit: int, **kwargs) -> tuple[subprocess.CompletedProcess, str]:
    """``subprocess.run(cmd, **kwargs)`` with the child's memory capped at ``limit`` bytes; returns the result and
    the mechanism used (``"cgroup"`` or ``"rlimit_data"``)."""
    group = _cgroup(limit)
    if group is not None:
        def enter() -> None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
    else:
        def enter() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        return subprocess.run(cmd, preexec_fn=enter, **kwargs), ("cgroup" if group is not None else "rlimit_data")
    finally:
        if group is not None:
            group.rmdir()
