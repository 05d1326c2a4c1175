"""Point-in-time-correct training sets.

The entity/label frame (one row per entity key, timestamped at its prediction cutoff) comes from the spec's dbt
label model; features are joined with Feast's point-in-time rules (one DuckDB ``ASOF`` query, tested equal to
Feast's ``get_historical_features``: see :mod:`batch_platform.lib.feature_store`). Rows whose label is not final at
the training cutoff are never included (the label embargo).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


def label_frame(con: duckdb.DuckDBPyConnection, spec: ModelSpec, training_cutoff: dt.datetime) -> pd.DataFrame:
    """Entity rows of the train/validation/test windows with a final label, stamped with their prediction
    cutoff (``event_timestamp``), the instant their label became final and their split."""
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
    df = con.sql(
        f"SELECT {', '.join(_q(c) for c in cols)}, CAST({spec.label.sql} AS {spec.label_sql_type}) AS {LABEL} "
        f"FROM {table} WHERE {_q(spec.label.date_column)} BETWEEN DATE '{first}' AND DATE '{last}' "
        f"AND ({spec.label.sql}) IS NOT NULL ORDER BY {_q(spec.entity.key)}"
    ).df()
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


FINGERPRINT_ROWS = 65_536
"""Rows per slice the fingerprint hashes: part of its definition (a different size gives other values)."""


def frame_fingerprint(df: pd.DataFrame, sort_by: str) -> str:
    """sha256 of the frame's content, hashed slice by slice (no serialized copy of the whole frame).

    The frame is converted to Arrow as it is (columns then taken in name order); the rows are ordered by
    ``sort_by`` with Arrow's stable sort (ascending, nulls last). The hash takes the schema (names and Arrow types,
    e.g. ``timestamp[us, tz=UTC]``) and the row count, then, for every ``FINGERPRINT_ROWS`` rows of that order,
    each column's Arrow IPC encoding of those rows (gathered into one contiguous chunk: validity, offsets and
    values buffers). The slices are fixed row ranges of the sorted order, so the value does not depend on the
    frame's index, row order or column order, nor on how pandas or Arrow chunk the data; it changes when a value,
    a null, a row, a column name or a column type changes."""
    import pyarrow.compute as pc

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.select(sorted(table.column_names)).replace_schema_metadata(None)  # pandas metadata: not content
    order = pc.sort_indices(table.select([sort_by]), sort_keys=[(sort_by, "ascending", "at_end")])
    digest = hashlib.sha256(b"batch_platform.frame_fingerprint/2\n")
    digest.update(table.schema.to_string(show_field_metadata=False, show_schema_metadata=False).encode())
    digest.update(f"\n{table.num_rows}\n".encode())
    for start in range(0, table.num_rows, FINGERPRINT_ROWS):
        part = table.take(order.slice(start, FINGERPRINT_ROWS)).combine_chunks()
        for column in part.columns:
            digest.update(pa.record_batch([column.chunk(0)], names=["c"]).serialize())
    return digest.hexdigest()


def summarize(df: pd.DataFrame, spec: ModelSpec) -> TrainingSetSummary:
    days = pd.to_datetime(df[spec.label.date_column])
    return TrainingSetSummary(
        rows=len(df),
        label_mean=float(df[LABEL].mean()) if len(df) else float("nan"),
        first_day=days.min().date(),
        last_day=days.max().date(),
        rows_per_split={k: int(v) for k, v in df[SPLIT].value_counts().sort_index().items()},
        fingerprint=frame_fingerprint(df, spec.entity.key),
    )


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


SNAPSHOT_ROW_GROUP_ROWS = 65_536
"""Rows per row group of a snapshot: what training out of core holds in memory at a time."""


def write_snapshot(df: pd.DataFrame, directory: Path, fingerprint: str) -> Path:
    """Write the training set as ``<directory>/<fingerprint[:16]>.parquet`` (content-addressed, atomic), in row
    groups of ``SNAPSHOT_ROW_GROUP_ROWS``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fingerprint[:16]}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(to_microsecond_arrow(df), tmp, row_group_size=SNAPSHOT_ROW_GROUP_ROWS)
        tmp.replace(path)
    return path
