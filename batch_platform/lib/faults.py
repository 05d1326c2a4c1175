"""Crash points: named places where the fault suite (``tests/faults/``) kills the process with SIGKILL, to prove
that a crash exactly there loses nothing and leaves nothing half visible (as fail points do in databases' test
suites). Inert unless ``BATCH_PLATFORM_CRASH_AT`` names the point: never set outside tests."""

from __future__ import annotations

import os
import signal

CRASH_VAR = "BATCH_PLATFORM_CRASH_AT"


def point(name: str) -> None:
    """SIGKILL this process if ``BATCH_PLATFORM_CRASH_AT`` is ``name``."""
    if os.environ.get(CRASH_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
