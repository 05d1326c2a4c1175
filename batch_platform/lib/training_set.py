"""Point-in-time-correct training sets.

The entity/label frame (one row per entity key, timestamped at its prediction cutoff) comes from the spec's dbt
label model; features are joined with Feast's point-in-time rules (one DuckDB ``ASOF`` query, tested equal to
Feast's ``get_historical_features``: see :mod:`batch_platform.lib.feature_store`). Rows whose label is not final at
the training cutoff are never included (the label embargo).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from batch_platform.lib.specs import ModelSpec, ModelSpecError

EVENT_TIMESTAMP = "event_timestamp"
LABEL = "label"
LABEL_FINAL_AT = "label_final_at"
SPLIT = "split"
VALID_FROM_SUFFIX = "_valid_from"
LABEL_SCHEMA = "marts"


@dataclass(frozen=True)
class TrainingSetSummary:
    rows: int
    label_mean: float  # the positive rate of a 0/1 label
    first_day: dt.date
    last_day: dt.date
    rows_per_split: dict[str, int]
    fingerprint: str


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def label_sql(con: duckdb.DuckDBPyConnection, spec: ModelSpec, training_cutoff: dt.datetime) -> str:
    """The query of the label rows of the train/validation/test windows (entity key, label day, join keys,
    passthrough features and the label), in entity-key order; raises :class:`ModelSpecError` when the label model
    or one of its columns is missing."""
    splits = spec.split_days(training_cutoff)
    first, last = splits["train"][0], splits["test"][1]
    table = f"{LABEL_SCHEMA}.{spec.label.model}"
    existing = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [LABEL_SCHEMA, spec.label.model],
    ).fetchall()}
    if not existing:
        raise ModelSpecError(f"{spec.name}: label model {table} does not exist (run dbt build first)")
    wanted = [spec.entity.key, spec.label.date_column, *spec.entity.join_keys, *spec.passthrough_features]
    if spec.label.column:
        wanted.append(spec.label.column)
    missing = [c for c in dict.fromkeys(wanted) if c not in existing]
    if missing:
        raise ModelSpecError(f"{spec.name}: label model {table} has no column(s) {missing}")
    cols = list(dict.fromkeys([spec.entity.key, spec.label.date_column, *spec.entity.join_keys,
                               *spec.passthrough_features]))
    return (f"SELECT {', '.join(_q(c) for c in cols)}, CAST({spec.label.sql} AS {spec.label_sql_type}) AS {LABEL} "
            f"FROM {table} WHERE {_q(spec.label.date_column)} BETWEEN DATE '{first}' AND DATE '{last}' "
            f"AND ({spec.label.sql}) IS NOT NULL ORDER BY {_q(spec.entity.key)}")


def stamp_labels(df: pd.DataFrame, spec: ModelSpec, training_cutoff: dt.datetime) -> pd.DataFrame:
    """Label rows (:func:`label_sql`, as DuckDB gives them to pandas) stamped with their prediction cutoff
    (``event_timestamp``), the instant their label became final and their split, the label cast to its dtype (in
    place; returned). Row by row: the rows of a frame stamped in parts are those of the whole frame stamped."""
    splits = spec.split_days(training_cutoff)
    # per distinct day (a few dozen), then spread to the rows
    codes, uniques = pd.factorize(df[spec.label.date_column])
    unique_days = [pd.Timestamp(d).date() for d in uniques]
    cutoff = pd.to_datetime([spec.prediction_cutoff(d) for d in unique_days], utc=True)
    final = pd.to_datetime([spec.label_final_at(d) for d in unique_days], utc=True)
    df[EVENT_TIMESTAMP] = pd.Series(cutoff.take(codes), index=df.index).astype("datetime64[us, UTC]")
    df[LABEL_FINAL_AT] = pd.Series(final.take(codes), index=df.index).astype("datetime64[us, UTC]")
    split = np.array(["train"] * len(unique_days), dtype=object)
    for name in ("validation", "test"):
        lo, hi = splits[name]
        split[[lo <= d <= hi for d in unique_days]] = name
    df[SPLIT] = pd.Series(split.take(codes) if len(df) else [], index=df.index, dtype=object)
    df[LABEL] = df[LABEL].astype("float64" if spec.is_regression else "int8")
    return df


def label_frame(con: duckdb.DuckDBPyConnection, spec: ModelSpec, training_cutoff: dt.datetime) -> pd.DataFrame:
    """Entity rows of the train/validation/test windows with a final label, stamped with their prediction
    cutoff (``event_timestamp``), the instant their label became final and their split, in entity-key order."""
    return stamp_labels(con.sql(label_sql(con, spec, training_cutoff)).df(), spec, training_cutoff)


FINGERPRINT_ROWS = 65_536
"""Rows per slice the fingerprint hashes: part of its definition (a different size gives other values)."""


class Fingerprint:
    """sha256 of a training set's content, fed in parts: the rows in entity-key order, as the snapshot stores them
    (:func:`snapshot_table`), ``num_rows`` of them in all. The hash takes the schema (names in name order and Arrow
    types, e.g. ``timestamp[us, tz=UTC]``) and the row count, then, for every ``FINGERPRINT_ROWS`` rows, each
    column's values in those rows (:func:`_canonical`: which are null, then the values). The
    slices are fixed row ranges of the key order, so the value does not depend on how the rows were cut into parts
    (nor on how pandas or Arrow chunk them); it changes when a value, a null, a row, a column name or a column type
    changes."""

    def __init__(self, schema: pa.Schema, num_rows: int) -> None:
        self._names = sorted(schema.names)
        self._digest = hashlib.sha256(b"batch_platform.frame_fingerprint/3\n")
        self._digest.update(pa.schema([schema.field(n) for n in self._names]).to_string(
            show_field_metadata=False, show_schema_metadata=False).encode())
        self._digest.update(f"\n{num_rows}\n".encode())
        self._num_rows, self._seen = num_rows, 0
        self._slices = RowSlices(FINGERPRINT_ROWS)

    def update(self, table: pa.Table) -> None:
        """The next rows (in key order)."""
        self._seen += table.num_rows
        if self._seen > self._num_rows:
            raise ValueError(f"more than the {self._num_rows} rows announced")
        for part in self._slices.add(table.select(self._names)):
            self._hash(part)

    def _hash(self, part: pa.Table) -> None:
        for column in part.combine_chunks().columns:
            self._digest.update(_canonical(column.chunk(0)))

    def hexdigest(self) -> str:
        if self._seen != self._num_rows:
            raise ValueError(f"{self._seen} rows hashed of the {self._num_rows} announced")
        for part in self._slices.rest():
            self._hash(part)
        return self._digest.hexdigest()


class RowSlices:
    """Tables added in parts of any size, given back in slices of ``rows`` rows (:meth:`rest`: the shorter last)."""

    def __init__(self, rows: int) -> None:
        self._size = rows
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        self._pending.append(table)
        self._rows += table.num_rows
        while self._rows >= self._size:
            yield self._take(self._size)

    def rest(self) -> Iterator[pa.Table]:
        if self._rows:
            yield self._take(self._rows)

    def _take(self, rows: int) -> pa.Table:
        buffered = pa.concat_tables(self._pending)
        rest = buffered.slice(rows)
        self._pending, self._rows = [rest], rest.num_rows
        return buffered.slice(0, rows)


def _canonical(values: pa.Array) -> bytes:
    """A column's rows as bytes that depend on their values alone (not on Arrow's buffers: their offsets, their
    spare capacity, what lies under a null): which rows are null (a bitmap), then the values with every null
    replaced by the type's zero -- fixed-width values as numpy lays them out, strings and bytes as their lengths
    and their bytes, anything else as its text."""
    import pyarrow.compute as pc

    valid = values.is_valid().to_numpy(zero_copy_only=False)
    if values.null_count:
        try:
            zero = pa.scalar(0).cast(values.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            zero = pa.scalar(False if pa.types.is_boolean(values.type) else "").cast(values.type)
        values = pc.if_else(pc.is_valid(values), values, zero)
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind):
        body = values.to_numpy(zero_copy_only=False).tobytes()
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        wide = values.cast(pa.large_binary())
        offsets = np.frombuffer(wide.buffers()[1], dtype=np.int64)[wide.offset:wide.offset + len(wide) + 1]
        data = wide.buffers()[2]
        body = ((offsets - offsets[0]).tobytes()
                + (bytes(memoryview(data)[offsets[0]:offsets[-1]]) if data is not None else b""))
    else:
        body = repr(values.to_pylist()).encode()
    bitmap = np.packbits(valid).tobytes()
    return b"".join([len(bitmap).to_bytes(8, "little"), bitmap, len(body).to_bytes(8, "little"), body])


def frame_fingerprint(df: pd.DataFrame, sort_by: str) -> str:
    """:class:`Fingerprint` of a whole frame, its rows taken in ``sort_by`` order (Arrow's stable sort, ascending,
    nulls last): independent of the frame's index, row order and column order."""
    import pyarrow.compute as pc

    table = snapshot_table(df)
    order = pc.sort_indices(table.select([sort_by]), sort_keys=[(sort_by, "ascending", "at_end")])
    fingerprint = Fingerprint(table.schema, table.num_rows)
    for start in range(0, table.num_rows, FINGERPRINT_ROWS):
        fingerprint.update(table.take(order.slice(start, FINGERPRINT_ROWS)))
    return fingerprint.hexdigest()


def to_microsecond_arrow(df: pd.DataFrame) -> pa.Table:
    """Arrow table with every timestamp at µs precision (readers such as DuckDB 2 reject ns tz timestamps)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for f in table.schema:
        if pa.types.is_timestamp(f.type):
            fields.append(pa.field(f.name, pa.timestamp("us", tz=f.type.tz), f.nullable))
        else:
            fields.append(f)
    return table.cast(pa.schema(fields), safe=False)


def snapshot_table(df: pd.DataFrame) -> pa.Table:
    """The frame as a snapshot stores it: :func:`to_microsecond_arrow`, and a column without any value (Arrow's
    ``null`` type) as strings, so that the type of a column does not depend on which rows a part holds."""
    table = to_microsecond_arrow(df)
    if not any(pa.types.is_null(f.type) for f in table.schema):
        return table
    schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema],
                       metadata=table.schema.metadata)
    return table.cast(schema)


SNAPSHOT_ROW_GROUP_ROWS = 65_536
"""Rows per row group of a snapshot: what training out of core holds in memory at a time."""
