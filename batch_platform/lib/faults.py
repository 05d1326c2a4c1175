"""Crash points: named places where the fault suite (``tests/faults/``) kills the process with SIGKILL, to prove
that a crash exactly there loses nothing and leaves nothing half visible (as fail points do in databases' test
suites). Inert unless ``BATCH_PLATFORM_CRASH_AT`` names the point: never set outside tests."""

from __future__ import annotations

import os
import signal

CRASH_VAR = "BATCH_PLATFORM_CRASH_AT"


def point(name: str, where: str | None = None) -> None:
    """SIGKILL this process if ``BATCH_PLATFORM_CRASH_AT`` is ``name``, or ``name:where`` (the point reached for one
    object: ``ingest.after_commit:raw.flight_schedule:2013-01-22`` kills after that partition's commit only)."""
    at = os.environ.get(CRASH_VAR)
    if at is not None and (at == name or (where is not None and at == f"{name}:{where}")):
        os.kill(os.getpid(), signal.SIGKILL)
