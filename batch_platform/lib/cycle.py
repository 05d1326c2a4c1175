"""The daily cycle's clock: which partition of a stage is due at a given instant, by the time model and a spec.

The automation conditions (``defs/monitoring/conditions.py``) ask these functions, with the evaluation time of each
tick, which single partition a time-driven stage works on now; the freshness policies state the same rules as
deadlines. Nothing here reads data: a due partition is also gated on its inputs being in (the conditions do that).

- **Predictions of flight day D** are due from D's prediction cutoff (the spec's ``cutoff``: e.g. D-1 18:00) until
  D begins (local midnight; a cutoff on D itself: until the next cutoff): scored once the cutoff has passed,
  re-scored within that window when an input or the champion changes, never once D is being flown.
- **Production accuracy of day D** is due from the instant D's labels are final (the spec's label embargo, e.g.
  D+2 06:00) until the labels of D+1 are: one day at a time, the newest with final labels.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from batch_platform.lib.specs import ModelSpec


def _local_day(spec: ModelSpec, now: dt.datetime) -> dt.date:
    return now.astimezone(ZoneInfo(spec.cutoff.timezone)).date()


def day_start(spec: ModelSpec, day: dt.date) -> dt.datetime:
    """Local midnight starting ``day`` (UTC): the flights of ``day`` are being flown from then on."""
    return dt.datetime.combine(day, dt.time(0), ZoneInfo(spec.cutoff.timezone)).astimezone(dt.UTC)


def prediction_window(spec: ModelSpec, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """When the predictions of ``day`` are due: from its cutoff until the day begins (a spec whose cutoff is on the
    day itself: until the next day's cutoff)."""
    start = spec.prediction_cutoff(day)
    end = day_start(spec, day)
    if end <= start:
        end = spec.prediction_cutoff(day + dt.timedelta(days=1))
    return start, end


def prediction_due_day(spec: ModelSpec, now: dt.datetime) -> dt.date | None:
    """The flight day whose predictions are due at ``now`` (see :func:`prediction_window`), else None."""
    today = _local_day(spec, now)
    for offset in range(spec.cutoff.days_before, -2, -1):  # a window may reach into the next day
        day = today + dt.timedelta(days=offset)
        start, end = prediction_window(spec, day)
        if start <= now < end:
            return day
    return None


def accuracy_due_day(spec: ModelSpec, now: dt.datetime) -> dt.date:
    """The newest day whose labels are final at ``now`` (its production accuracy is due until the next one is)."""
    return spec.last_final_day(now)


def cron_at(local_time: str) -> str:
    """A daily cron expression for a local ``HH:MM``."""
    t = dt.time.fromisoformat(local_time)
    return f"{t.minute} {t.hour} * * *"
