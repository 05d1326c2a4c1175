"""The live replay's upstream: what a data provider on the live clock has published by a given instant.

On the live clock (:mod:`batch_platform.lib.clock`) the shipped year of flights is re-dated so that its newest
published day is yesterday. :func:`publish_due` lands, into the landing zone, every batch the time model says is
published by ``now`` and was not landed yet — on a first call the last ``history_days`` flight days, then each
morning yesterday's flights and weather and tomorrow's schedule — with manifests stating their publication times,
exactly as :func:`batch_platform.lib.landing.replay` writes them. The platform's arrival sensor takes it from there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from batch_platform.lib.clock import DataClock
from batch_platform.lib.landing import replay
from batch_platform.lib.time_model import TimeModel

DEFAULT_HISTORY_DAYS = 91
"""Flight days published before the first live morning: the shipped specs train on 49 days of final labels, and
their features look back 28 days."""


@dataclass(frozen=True)
class Published:
    flight_days: tuple[dt.date, dt.date] | None
    """First and last flight day landed by this call (flights and weather), or None."""
    schedule_through: dt.date | None
    """The last day whose flight schedule is landed (published the day before its flights)."""
    files_written: int
    landed_through: dt.date | None
    """The newest flight day landed so far (the feed's cursor)."""

    def describe(self) -> str:
        if self.flight_days is None:
            return f"nothing new (landed through {self.landed_through})"
        first, last = self.flight_days
        days = f"{first}" if first == last else f"{first} .. {last}"
        return (f"published flights and weather of {days} and schedules through {self.schedule_through} "
                f"({self.files_written} file(s) written)")


def publish_due(landing: Path, clock: DataClock, now: dt.datetime, time_model: TimeModel, *,
                landed_through: dt.date | None, history_days: int = DEFAULT_HISTORY_DAYS) -> Published:
    """Land what upstream has published by ``now`` after ``landed_through`` (None: the last ``history_days``)."""
    if not clock.is_live:
        raise ValueError(f"the live feed publishes on the live clock; this data is on {clock.label}")
    newest = min(time_model.last_published_day("flights", now), clock.last_source_day)
    schedule_through = min(time_model.last_published_day("flight_schedule", now), clock.last_source_day)
    first = newest - dt.timedelta(days=history_days - 1) if landed_through is None else \
        landed_through + dt.timedelta(days=1)
    first = max(first, clock.first_day)
    if first > newest:
        return Published(None, None, 0, landed_through)
    summary = replay(landing, first, newest, clock=clock, schedule_through=schedule_through, published_by=now,
                     time_model=time_model)
    return Published((first, newest), schedule_through, len(summary.files_written), newest)


__all__ = ["DEFAULT_HISTORY_DAYS", "Published", "publish_due"]
