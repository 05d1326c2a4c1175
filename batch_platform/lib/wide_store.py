"""The SQLite online store's layout: one row per entity key holding every feature of a view (a *wide row*).

Feast's own SQLite online store keeps one row per (entity key, feature) with each value a serialized protobuf, and
writes them one statement at a time: 88-96k values/s here, against 0.7-1.2M for a wide table written with one
``executemany`` per transaction. This module is that wide table, and nothing else: plain ``sqlite3``, no Feast, no
pandas, so a reader (``batch-platform predict``, the serving endpoint) opens it in milliseconds.
``batch_platform.lib.feast_wide_store`` plugs it into Feast as a custom online store (``feature_store.yaml``), so
``feast apply``, ``feast materialize`` and ``get_online_features`` work on the same rows.

Per view, table ``wide_<project>_<view>``::

    entity_key TEXT PRIMARY KEY   -- the join key's value (several join keys: "k1=v1\\x1fk2=v2", keys sorted)
    event_ts   INTEGER            -- the row's event timestamp, µs since the epoch (UTC)
    created_ts INTEGER            -- its created timestamp when the source has one, else NULL
    <feature>  REAL | INTEGER | TEXT | BLOB   -- one column per feature, NULL when missing

and one catalog row per view in ``wide_views`` (features with their Feast value types, join keys, TTL), written when
the view is applied: what a reader needs to decode and expire a row without the Feast registry.

**Writes** are upserts where the newer event timestamp wins (ties: the later write), all rows of a call in one
transaction: a reader sees the previous batch or the whole new one, never half of each. The database is in WAL mode,
so readers never wait for a writer.

**Values**: FLOAT/DOUBLE as REAL, INT32/INT64 as INTEGER, BOOL as INTEGER 0/1, STRING as TEXT, BYTES as BLOB,
UNIX_TIMESTAMP as INTEGER seconds since the epoch (Feast's own precision for the type). Lists and other types are
refused with :class:`UnsupportedFeatureType` when the view is applied.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FEAST_TYPE = "batch_platform.lib.feast_wide_store.WideSqliteOnlineStore"  # feature_store.yaml's online_store type
CATALOG = "wide_views"
KEY_SEPARATOR = "\x1f"
BUSY_TIMEOUT_S = 60.0
SQL_TYPES = {"FLOAT": "REAL", "DOUBLE": "REAL", "INT32": "INTEGER", "INT64": "INTEGER", "BOOL": "INTEGER",
             "STRING": "TEXT", "BYTES": "BLOB", "UNIX_TIMESTAMP": "INTEGER"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class WideStoreError(RuntimeError):
    """Base class of the online store's named errors."""


class UnsupportedFeatureType(WideStoreError, TypeError):
    """A feature whose Feast type has no column type in the wide layout (lists, maps, ...)."""


class UnknownOnlineView(WideStoreError, LookupError):
    """The view was never applied to this online store file."""


@dataclass(frozen=True)
class ViewLayout:
    """A view as stored: its table, features (name -> Feast value type name), join keys and TTL."""

    project: str
    view: str
    features: dict[str, str]
    join_keys: tuple[str, ...]
    ttl_seconds: float | None

    @property
    def table(self) -> str:
        return table_name(self.project, self.view)

    @property
    def columns(self) -> list[str]:
        return list(self.features)

    def to_json(self) -> str:
        return json.dumps({"features": self.features, "join_keys": list(self.join_keys),
                           "ttl_seconds": self.ttl_seconds})


def table_name(project: str, view: str) -> str:
    return f"wide_{project}_{view}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def entity_key_text(join_keys: Sequence[str], values: Sequence[Any]) -> str:
    """The stored form of an entity key: the value itself for one join key, else ``k=v`` pairs in key order."""
    if len(join_keys) == 1:
        return str(values[0])
    return KEY_SEPARATOR.join(f"{k}={v}" for k, v in sorted(zip(join_keys, values)))


def to_epoch_us(ts: dt.datetime) -> int:
    """µs since the epoch; a naive datetime is UTC (Feast's rule)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


# ----------------------------------------------------------------------------------------------------------------
# Connections
# ----------------------------------------------------------------------------------------------------------------
def connect(path: Path | str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: :func:`transaction`). Read-only connections
    never create the file; a writer creates it (and its folder) in WAL mode."""
    path = Path(path)
    if read_only:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                              check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
    return con


@contextlib.contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (taken at once, so concurrent writers queue instead of failing mid-way)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# ----------------------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------------------
def ensure_catalog(con: sqlite3.Connection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {CATALOG} (project TEXT, view TEXT, layout TEXT, updated_at REAL, "
                "PRIMARY KEY (project, view))")


def apply_view(con: sqlite3.Connection, layout: ViewLayout) -> None:
    """Create (or widen) the view's table and record its layout. A feature dropped from the view keeps its column
    (never read); a changed type is recorded and read as the new type."""
    bad = {f: t for f, t in layout.features.items() if t not in SQL_TYPES}
    if bad:
        raise UnsupportedFeatureType(f"{layout.view}: feature types {bad} have no column in the wide online store "
                                     f"(supported: {sorted(SQL_TYPES)})")
    with transaction(con):
        ensure_catalog(con)
        cols = ", ".join(f"{_q(f)} {SQL_TYPES[t]}" for f, t in layout.features.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {_q(layout.table)} (entity_key TEXT PRIMARY KEY, "
                    f"event_ts INTEGER NOT NULL, created_ts INTEGER{', ' + cols if cols else ''}) WITHOUT ROWID")
        have = {row[1] for row in con.execute(f"PRAGMA table_info({_q(layout.table)})")}
        for f, t in layout.features.items():
            if f not in have:
                con.execute(f"ALTER TABLE {_q(layout.table)} ADD COLUMN {_q(f)} {SQL_TYPES[t]}")
        con.execute(f"INSERT OR REPLACE INTO {CATALOG} VALUES (?, ?, ?, ?)",
                    (layout.project, layout.view, layout.to_json(), time.time()))


def drop_view(con: sqlite3.Connection, project: str, view: str) -> None:
    with transaction(con):
        ensure_catalog(con)
        con.execute(f"DROP TABLE IF EXISTS {_q(table_name(project, view))}")
        con.execute(f"DELETE FROM {CATALOG} WHERE project = ? AND view = ?", (project, view))


def layout_of(con: sqlite3.Connection, project: str, view: str) -> ViewLayout:
    try:
        row = con.execute(f"SELECT layout FROM {CATALOG} WHERE project = ? AND view = ?", (project, view)).fetchone()
    except sqlite3.OperationalError:  # no catalog: nothing was ever applied to this file
        row = None
    if row is None:
        raise UnknownOnlineView(f"view {view!r} of project {project!r} was never applied to this online store "
                                "(run `feast apply` / the feature_definitions asset)")
    raw = json.loads(row[0])
    return ViewLayout(project, view, dict(raw["features"]), tuple(raw["join_keys"]), raw["ttl_seconds"])


def layout_stamp(con: sqlite3.Connection, project: str, view: str) -> float | None:
    """When the view's layout was last applied (None: never), for readers that cache it."""
    try:
        row = con.execute(f"SELECT updated_at FROM {CATALOG} WHERE project = ? AND view = ?",
                          (project, view)).fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else row[0]


def layouts(con: sqlite3.Connection, project: str) -> dict[str, ViewLayout]:
    try:
        rows = con.execute(f"SELECT view FROM {CATALOG} WHERE project = ?", (project,)).fetchall()
    except sqlite3.OperationalError:
        return {}
    return {v: layout_of(con, project, v) for (v,) in rows}


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def upsert_sql(layout: ViewLayout, columns: Sequence[str] | None = None) -> str:
    """``INSERT ... ON CONFLICT DO UPDATE`` of (entity_key, event_ts, created_ts, *columns), newer event wins."""
    columns = list(layout.columns if columns is None else columns)
    names = ["entity_key", "event_ts", "created_ts", *columns]
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in names[1:])
    return (f"INSERT INTO {_q(layout.table)} ({', '.join(_q(c) for c in names)}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT (entity_key) DO UPDATE SET {sets} WHERE excluded.event_ts >= {_q(layout.table)}.event_ts")


def write_rows(con: sqlite3.Connection, layout: ViewLayout, rows: Iterable[Sequence[Any]],
               columns: Sequence[str] | None = None) -> int:
    """Upsert ``rows`` of (entity_key text, event µs, created µs or None, *values in ``columns`` order); the
    caller holds the transaction. Returns the rows written."""
    cur = con.executemany(upsert_sql(layout, columns), rows)
    return cur.rowcount if cur.rowcount >= 0 else 0


def column_values(kind: str, values: Sequence[Any]) -> list[Any]:
    """Python values of one column (from Arrow's ``to_pylist``) as the layout stores them; None/NaN -> NULL."""
    if kind in ("FLOAT", "DOUBLE"):
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    if kind in ("INT32", "INT64"):
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v) for v in values]
    if kind == "BOOL":
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else int(bool(v)) for v in values]
    if kind == "UNIX_TIMESTAMP":
        return [None if v is None else _epoch_seconds(v) for v in values]
    if kind == "STRING":
        return [None if v is None else str(v) for v in values]
    return list(values)


def arrow_column_values(kind: str, column) -> list[Any]:
    """An Arrow column as :func:`column_values` stores it, converted by Arrow (NaN -> NULL; timestamps -> epoch
    seconds, floored like Feast's ``int(ts.timestamp())`` for times after 1970)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind in ("FLOAT", "DOUBLE"):
        column = column.cast(pa.float64())
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
    elif kind == "UNIX_TIMESTAMP":
        if pa.types.is_timestamp(column.type):
            us = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
            column = pc.floor(pc.divide(us.cast(pa.float64()), 1e6)).cast(pa.int64())
        return column.to_pylist()
    elif kind == "BOOL":
        column = column.cast(pa.int8()) if not pa.types.is_integer(column.type) else column
        return [None if v is None else int(bool(v)) for v in column.to_pylist()]
    elif kind in ("INT32", "INT64"):
        if pa.types.is_floating(column.type):
            return column_values(kind, column.to_pylist())
        column = column.cast(pa.int64())
    elif kind == "STRING" and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column_values(kind, column.to_pylist())
    return column.to_pylist()


def duckdb_key_expr(join_keys: Sequence[str], columns: Sequence[str]) -> str:
    """DuckDB SQL of :func:`entity_key_text` over the file columns ``columns`` holding ``join_keys``."""
    if len(join_keys) == 1:
        return f"CAST({columns[0]} AS VARCHAR)"
    pairs = sorted(zip(join_keys, columns))
    parts = ", ".join(f"'{k.replace(chr(39), chr(39) * 2)}=' || CAST({c} AS VARCHAR)" for k, c in pairs)
    return f"concat_ws(chr({ord(KEY_SEPARATOR)}), {parts})"


def duckdb_value_expr(kind: str, column: str) -> str:
    """DuckDB SQL turning the file column ``column`` into the stored form of a ``kind`` value (as
    :func:`column_values` does in Python: NaN -> NULL, booleans 0/1, timestamps floored to epoch seconds)."""
    if kind in ("FLOAT", "DOUBLE"):
        return f"(CASE WHEN isnan(CAST({column} AS DOUBLE)) THEN NULL ELSE CAST({column} AS DOUBLE) END)"
    if kind in ("INT32", "INT64"):
        return f"CAST(trunc({column}) AS BIGINT)"
    if kind == "BOOL":
        return f"CAST(CAST({column} AS BOOLEAN) AS INTEGER)"
    if kind == "UNIX_TIMESTAMP":
        return f"CAST(floor(epoch_us({column}) / 1000000.0) AS BIGINT)"
    if kind == "STRING":
        return f"CAST({column} AS VARCHAR)"
    return column


def arrow_rows(layout: ViewLayout, table, *, timestamp_column: str, created_column: str | None = None,
               key_columns: Sequence[str] | None = None) -> list[tuple]:
    """Rows for :func:`write_rows` from an Arrow table holding the join keys, the event timestamp column
    (``created_column``: the created timestamp, optional) and the layout's features by name."""
    import pyarrow as pa

    keys = list(key_columns or layout.join_keys)
    if len(keys) == 1:
        key_text = [None if v is None else str(v) for v in table.column(keys[0]).to_pylist()]
    else:
        parts = [table.column(k).to_pylist() for k in keys]
        key_text = [entity_key_text(keys, vals) for vals in zip(*parts)]

    def micros(name: str) -> list:
        col = table.column(name)
        if not pa.types.is_timestamp(col.type):
            raise TypeError(f"{name} is {col.type}, not a timestamp")
        return col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64()).to_pylist()

    event = micros(timestamp_column)
    created = micros(created_column) if created_column else [None] * table.num_rows
    values = [arrow_column_values(kind, table.column(f)) for f, kind in layout.features.items()]
    return list(zip(key_text, event, created, *values))


def _epoch_seconds(v: Any) -> int:
    if isinstance(v, dt.datetime):
        return to_epoch_us(v) // 1_000_000
    if isinstance(v, (int, float)):
        return int(v)
    raise TypeError(f"not a timestamp: {v!r}")


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
class StoredRow:
    """One stored row: its event time and the values of the features read (UNIX_TIMESTAMP: datetime, BOOL: bool)."""

    __slots__ = ("_event_us", "values")

    def __init__(self, event_us: int, values: dict[str, Any]):
        self._event_us = event_us
        self.values = values

    @property
    def event_ts(self) -> dt.datetime:  # (converted when asked: a prediction lookup never asks)
        return from_epoch_us(self._event_us)


def decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "UNIX_TIMESTAMP":
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if kind == "BOOL":
        return bool(value)
    return value


class Reader:
    """Point reads of one view, statement prepared once (``sqlite3`` caches it per connection)."""

    def __init__(self, con: sqlite3.Connection, layout: ViewLayout, features: Sequence[str] | None = None):
        self.con = con
        self.layout = layout
        self.features = list(layout.columns if features is None else features)
        unknown = [f for f in self.features if f not in layout.features]
        if unknown:
            raise UnknownOnlineView(f"{layout.view} has no features {unknown} (has {layout.columns})")
        self.kinds = [layout.features[f] for f in self.features]
        # the columns whose stored form is not their value (timestamps, booleans), by position in a row
        self._decoded = [(i, f, k) for i, (f, k) in enumerate(zip(self.features, self.kinds), start=1)
                         if k in ("UNIX_TIMESTAMP", "BOOL")]
        cols = ", ".join(["event_ts", *(_q(f) for f in self.features)])
        self._one = f"SELECT {cols} FROM {_q(layout.table)} WHERE entity_key = ?"
        self._many = f"SELECT entity_key, {cols} FROM {_q(layout.table)} WHERE entity_key IN "

    def _row(self, raw: Sequence[Any]) -> StoredRow:
        values = dict(zip(self.features, raw[1:]))
        for i, f, k in self._decoded:
            if raw[i] is not None:
                values[f] = decode(k, raw[i])
        return StoredRow(raw[0], values)

    def get(self, key: str) -> StoredRow | None:
        raw = self.con.execute(self._one, (key,)).fetchone()
        return None if raw is None else self._row(raw)

    def get_many(self, keys: Sequence[str], *, chunk: int = 500) -> list[StoredRow | None]:
        found: dict[str, StoredRow] = {}
        for i in range(0, len(keys), chunk):
            part = list(dict.fromkeys(keys[i:i + chunk]))
            sql = self._many + f"({', '.join('?' * len(part))})"
            for raw in self.con.execute(sql, part):
                found[raw[0]] = self._row(raw[1:])
        return [found.get(k) for k in keys]
