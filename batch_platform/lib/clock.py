"""Which dates the landed data is on: the 2013 replay clock or the live clock.

The shipped source covers flight days 2013-01-01 .. 2013-12-31. The landing replay either keeps those dates (the
**2013 replay** clock: reproducible, used by most tests) or re-dates every row by a whole number of weeks (weekdays
keep their meaning) so that yesterday in real time falls half a year before the source's end: about six months of
history are published already, and the rest is published one day a morning for half a year (the **live** clock). The shift is chosen once, when the first live replay lands into a data dir, and recorded in
``<data dir>/clock.json``; every later replay into that data dir, the partition definitions and every date the
platform shows read it from there, so the dates of one data dir never move.

Another data set (an example project, :mod:`batch_platform.lib.examples`) records its own source range with the
clock (``source_first``, ``source_last``); the shipped flights' is 2013.

A project of the user's own, whose batches are their exports of real days, is on the **calendar** clock: its dates
are the real ones (no re-dating, no end: a new day is published every morning). The first export landed into a data
dir with nothing recorded records it, from the first day landed (:func:`calendar_clock`).

Dates on the live clock lie on the real calendar (holidays, weekdays, DST follow the new dates); a live day maps
back to the 2013 day it was re-dated from with :meth:`DataClock.source_day`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from batch_platform.lib.files import atomic_write

REPLAY = "replay-2013"
LIVE = "live"
CALENDAR = "calendar"
OPEN_END = dt.date(9999, 1, 1)
"""The last source day of a calendar clock: its data never ends."""
SOURCE_FIRST_DAY = dt.date(2013, 1, 1)
SOURCE_LAST_DAY = dt.date(2013, 12, 31)


class ClockMismatch(ValueError):
    """A replay on one clock into a data dir whose data is on another."""


@dataclass(frozen=True)
class DataClock:
    kind: str
    shift_days: int
    """Days added to every source date (a multiple of 7)."""
    source_first: dt.date = SOURCE_FIRST_DAY
    """The first day of the data set (the shipped flights: 2013-01-01)."""
    source_last: dt.date = SOURCE_LAST_DAY
    """Its last day."""

    def __post_init__(self) -> None:
        if self.kind not in (REPLAY, LIVE, CALENDAR):
            raise ValueError(f"unknown clock {self.kind!r}; expected {REPLAY!r}, {LIVE!r} or {CALENDAR!r}")
        if self.shift_days % 7:
            raise ValueError(f"the re-dating shift must be whole weeks, got {self.shift_days} days")
        if self.kind in (REPLAY, CALENDAR) and self.shift_days:
            raise ValueError(f"the {self.kind} clock keeps the source's dates (shift 0)")
        if self.source_last < self.source_first:
            raise ValueError(f"the source ends ({self.source_last}) before it starts ({self.source_first})")

    @property
    def is_live(self) -> bool:
        """Days go on being published in real time (the live replay, or the calendar of one's own data): the
        partitions have no fixed end."""
        return self.kind in (LIVE, CALENDAR)

    @property
    def is_calendar(self) -> bool:
        return self.kind == CALENDAR

    @property
    def first_day(self) -> dt.date:
        """The first flight day of the data (the first partition)."""
        return self.source_first + dt.timedelta(days=self.shift_days)

    @property
    def last_source_day(self) -> dt.date:
        """The last flight day the re-dated source holds (on the live clock, later days than yesterday are landed
        only once they are published)."""
        return self.source_last + dt.timedelta(days=self.shift_days)

    @property
    def fixed_end(self) -> dt.date | None:
        """The last partition of a finished data set (2013 replay); ``None`` on the live clock (no fixed end)."""
        return None if self.is_live else self.source_last

    def source_day(self, day: dt.date) -> dt.date:
        """The 2013 day that ``day`` was re-dated from."""
        return day - dt.timedelta(days=self.shift_days)

    def shifted(self, source_day: dt.date) -> dt.date:
        return source_day + dt.timedelta(days=self.shift_days)

    @property
    def label(self) -> str:
        if self.is_calendar:
            return f"calendar dates (data from {self.source_first.isoformat()})"
        if self.is_live:
            return f"live dates ({self._data} data re-dated +{self.shift_days // 7} weeks)"
        return f"{self._data} replay dates"

    @property
    def _data(self) -> str:
        first, last = self.source_first.year, self.source_last.year
        return str(first) if first == last else f"{first}-{last}"

    def describe(self, day: dt.date | None) -> str:
        """A day as users see it: the date with the clock it is on."""
        if day is None:
            return f"— ({self.label})"
        if self.is_calendar:
            return day.isoformat()
        if self.is_live:
            return f"{day.isoformat()} (live; {self._data} source day {self.source_day(day).isoformat()})"
        return f"{day.isoformat()} ({self._data} replay)"


REPLAY_CLOCK = DataClock(REPLAY, 0)


LIVE_DAYS_AHEAD = 182
"""On the live clock, the source holds this many days (and up to 6 more) after the last published day: tomorrow's
schedule can be published, and a live replay keeps publishing a new day every morning for half a year."""


def live_clock_for(last_published_day: dt.date, days_ahead: int = LIVE_DAYS_AHEAD,
                   source: tuple[dt.date, dt.date] = (SOURCE_FIRST_DAY, SOURCE_LAST_DAY)) -> DataClock:
    """The live clock whose re-dated source covers ``last_published_day`` and at least ``days_ahead`` days after it,
    with the fewest whole weeks of shift: the source's last day lands on ``last_published_day + days_ahead`` ..
    ``+6 days`` (those later days land once published)."""
    weeks = math.ceil((last_published_day + dt.timedelta(days=days_ahead) - source[1]).days / 7)
    if weeks <= 0:
        raise ValueError(f"{last_published_day} is inside the source: a live clock needs a later date")
    return DataClock(LIVE, 7 * weeks, *source)


def calendar_clock(first_day: dt.date) -> DataClock:
    """The clock of one's own data on the real calendar, whose first day (the first partition) is ``first_day``."""
    return DataClock(CALENDAR, 0, first_day, OPEN_END)


def read_clock(path: Path) -> DataClock | None:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise ClockMismatch(f"{path}: unreadable clock record: {e}") from e
    try:
        source = {k: dt.date.fromisoformat(raw[k]) for k in ("source_first", "source_last") if k in raw}
        return DataClock(kind=raw["kind"], shift_days=int(raw["shift_days"]), **source)
    except (KeyError, TypeError, ValueError) as e:
        raise ClockMismatch(f"{path}: invalid clock record {raw!r}: {e}") from e


def current_clock(path: Path) -> DataClock:
    """The clock recorded at ``path``; the 2013 replay clock when nothing was recorded."""
    return read_clock(path) or REPLAY_CLOCK


def record_clock(path: Path, clock: DataClock) -> DataClock:
    """Record ``clock`` at ``path`` unless a clock is recorded already: then it must be the same one."""
    existing = read_clock(path)
    if existing is not None:
        if existing != clock:
            raise ClockMismatch(
                f"the data in {path.parent} is on {existing.label}; a replay on {clock.label} would mix clocks. "
                "Use another data dir (BATCH_PLATFORM_DATA_DIR) or remove that one.")
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps({**asdict(clock), "first_day": clock.first_day.isoformat()}, indent=2,
                                   default=str) + "\n").encode())
    return clock


__all__ = ["CALENDAR", "ClockMismatch", "DataClock", "LIVE", "LIVE_DAYS_AHEAD", "OPEN_END", "REPLAY", "REPLAY_CLOCK",
           "calendar_clock", "current_clock", "live_clock_for", "read_clock", "record_clock"]
