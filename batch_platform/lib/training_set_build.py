"""A training set built part by part, in memory bounded by a part's rows rather than the set's.

:func:`stage` copies, from the warehouse, the label rows (:func:`training_set.label_sql`, in entity-key order)
and the served-features rows of their period (``scoring.copy_served_features``) to parquet files beside the
snapshot, so the warehouse connection is held only for two copies. :func:`build` then reads the label rows
``chunk_rows`` at a time and, per part: stamps them (:func:`training_set.stamp_labels`), joins the features (the
point-in-time join of ``historical_features``), writes the rows to the snapshot in row groups of
``SNAPSHOT_ROW_GROUP_ROWS`` and feeds the :class:`training_set.Fingerprint`, the summary and the three checks
(:class:`leakage.LeakageCheck`, :class:`skew.SkewComparison` with the served rows of the part's keys,
:class:`missingness.MissingnessAudit`). Every step works row by row or sums over rows, so the snapshot, its
fingerprint and the reports are those of the whole frame built at once (``tests/test_training_set_build.py``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.lib import leakage, missingness, processes, scoring, skew, training_set
from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import (EVENT_TIMESTAMP, LABEL, SNAPSHOT_ROW_GROUP_ROWS, SPLIT, Fingerprint,
                                             RowSlices, TrainingSetSummary)

CHUNK_ROWS = 4 * SNAPSHOT_ROW_GROUP_ROWS
"""Label rows joined at a time: what the build holds in memory (with their features), whatever the set's size."""
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Staged:
    """The inputs of a build, copied out of the warehouse into ``folder``."""

    folder: Path
    spec: ModelSpec
    training_cutoff: dt.datetime
    rows: int  # label rows
    served_rows: int  # served-features rows of the label rows' prediction cutoffs
    served_columns: list[str]

    @property
    def labels(self) -> Path:
        return self.folder / "labels.parquet"

    @property
    def served(self) -> Path:
        return self.folder / "served.parquet"


@dataclass
class Built:
    snapshot: Path
    summary: TrainingSetSummary
    columns: list[str]
    leakage: leakage.LeakageReport
    skew: skew.SkewReport
    missingness: missingness.MissingnessReport


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def staging_folder(directory: Path) -> Path:
    """A new folder for one build's staged files under the snapshots' ``directory``, named for this process, after
    removing those whose process is gone (a build killed before it could clean up)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{STAGING_PREFIX}*"):
        owner = _owner(stale.name)
        if owner is None or processes.is_alive(owner) is False:
            shutil.rmtree(stale, ignore_errors=True)
    me = processes.current()
    folder = directory / f"{STAGING_PREFIX}{me.host}.{me.pid}.{me.started}.{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _owner(name: str) -> processes.ProcessIdentity | None:
    """The process a staging folder's name records (None: a name this module does not write)."""
    try:
        host, pid, started, _ = name[len(STAGING_PREFIX):].rsplit(".", 3)
        return processes.ProcessIdentity(host, int(pid), started)
    except ValueError:
        return None


def stage(con: duckdb.DuckDBPyConnection, spec: ModelSpec, training_cutoff: dt.datetime, folder: Path) -> Staged:
    """Copy the label rows and the served-features rows of their prediction cutoffs into ``folder``."""
    sql = training_set.label_sql(con, spec, training_cutoff)
    con.execute(f"COPY ({sql}) TO {_lit(folder / 'labels.parquet')} (FORMAT parquet)")
    day = _q(spec.label.date_column)
    days = [d for (d,) in con.execute(f"SELECT DISTINCT {day} FROM read_parquet({_lit(folder / 'labels.parquet')})")
            .fetchall()]
    rows = pq.ParquetFile(folder / "labels.parquet").metadata.num_rows
    served_rows, served_columns = 0, scoring.served_meta_columns(spec)
    if days:
        cutoffs = [spec.prediction_cutoff(pd.Timestamp(d).date()) for d in days]
        served_rows = scoring.copy_served_features(con, spec, min(cutoffs), max(cutoffs), folder / "served.parquet")
        if (folder / "served.parquet").exists():
            served_columns = pq.read_schema(folder / "served.parquet").names
    return Staged(folder, spec, training_cutoff, rows, served_rows, served_columns)


def _label_parts(staged: Staged, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The label rows in parts of ``chunk_rows`` (a multiple of DuckDB's 2,048-row vector), typed as DuckDB types
    the whole frame: an integer or boolean column with a null in any part is a pandas nullable one in every part."""
    if chunk_rows % 2048:
        raise ValueError(f"chunk_rows must be a multiple of 2048, not {chunk_rows}")
    con = duckdb.connect()
    try:
        source = f"read_parquet({_lit(staged.labels)})"
        names = pq.read_schema(staged.labels).names
        counts = con.execute("SELECT " + ", ".join(f'count(*) - count("{n}")' for n in names) + f" FROM {source}"
                             ).fetchall()[0]
        with_nulls = {n for n, c in zip(names, counts, strict=True) if c}
        con.execute(f"SELECT * FROM {source}")
        while True:
            part = con.fetch_df_chunk(chunk_rows // 2048)
            if part.empty:
                return
            for name in with_nulls:
                dtype = part[name].dtype
                if dtype.kind in "biu":  # no null in this part: numpy-typed
                    part[name] = part[name].astype("boolean" if dtype.kind == "b" else
                                                   f"{'U' if dtype.kind == 'u' else ''}Int{dtype.itemsize * 8}")
            yield part
    finally:
        con.close()


class _SnapshotWriter:
    """Rows to a parquet file in row groups of ``SNAPSHOT_ROW_GROUP_ROWS``, whatever the parts' sizes; the schema
    (pandas metadata included) is the first part's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._groups = RowSlices(SNAPSHOT_ROW_GROUP_ROWS)

    def add(self, table: pa.Table) -> pa.Table:
        """Append ``table``; returns it in the file's schema."""
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        elif not table.schema.equals(self._writer.schema, check_metadata=False):
            table = table.cast(self._writer.schema)
        for group in self._groups.add(table.replace_schema_metadata(self._writer.schema.metadata)):
            self._writer.write_table(group, row_group_size=group.num_rows)
        return table

    def close(self) -> None:
        if self._writer is None:
            return
        for group in self._groups.rest():
            self._writer.write_table(group, row_group_size=group.num_rows)
        self._writer.close()


class _Summary:
    def __init__(self, spec: ModelSpec) -> None:
        self._day = spec.label.date_column
        self.rows, self.label_sum = 0, 0.0
        self.first_day: dt.date | None = None
        self.last_day: dt.date | None = None
        self.splits: Counter = Counter()

    def add(self, frame: pd.DataFrame) -> None:
        days = pd.to_datetime(frame[self._day])
        first, last = days.min().date(), days.max().date()
        self.first_day = first if self.first_day is None else min(first, self.first_day)
        self.last_day = last if self.last_day is None else max(last, self.last_day)
        self.rows += len(frame)
        self.label_sum += float(frame[LABEL].sum())
        self.splits.update({k: int(v) for k, v in frame[SPLIT].value_counts().items()})

    def summary(self, fingerprint: str) -> TrainingSetSummary:
        return TrainingSetSummary(
            rows=self.rows, label_mean=self.label_sum / self.rows if self.rows else float("nan"),
            first_day=self.first_day, last_day=self.last_day,
            rows_per_split={k: self.splits[k] for k in sorted(self.splits)}, fingerprint=fingerprint)


def build(staged: Staged, client, directory: Path, *, chunk_rows: int = CHUNK_ROWS,
          progress: Callable[[int, int], None] | None = None) -> Built:
    """The training set of ``staged`` as the snapshot ``<directory>/<fingerprint[:16]>.parquet`` (content-addressed,
    written whole or not at all) with its summary and check reports. ``client``: the feature store
    (:class:`batch_platform.lib.feature_store.FeatureStoreClient`). ``progress(rows done, rows in all)`` after each
    part."""
    spec = staged.spec
    key = spec.entity.key
    summary = _Summary(spec)
    leaks = leakage.LeakageCheck(staged.training_cutoff, key=key)
    skews = skew.SkewComparison(staged.served_columns, key=key, exclude=scoring.served_meta_columns(spec))
    audited = list(dict.fromkeys([*spec.entity.join_keys, *spec.passthrough_features]))
    missing = missingness.MissingnessAudit(label=LABEL, columns=audited, regression=spec.is_regression)
    writer = _SnapshotWriter(staged.folder / "snapshot.parquet")
    fingerprint: Fingerprint | None = None
    columns: list[str] = []
    served = duckdb.connect()
    try:
        for part in _label_parts(staged, chunk_rows):
            labels = training_set.stamp_labels(part, spec, staged.training_cutoff)
            frame = client.historical_features(labels, spec.feature_service, timestamp_column=EVENT_TIMESTAMP)
            table = writer.add(training_set.snapshot_table(frame))
            if fingerprint is None:
                fingerprint, columns = Fingerprint(table.schema, staged.rows), list(frame.columns)
            fingerprint.update(table)
            summary.add(frame)
            leaks.add(frame)
            missing.add(frame)
            skews.add(frame, _served_rows(served, staged, frame[key].iloc[0], frame[key].iloc[-1]))
            if progress is not None:
                progress(summary.rows, staged.rows)
    finally:
        served.close()
        writer.close()
    if fingerprint is None:
        raise ValueError(f"{spec.name}: no label rows to build a training set from")
    digest = fingerprint.hexdigest()
    path = directory / f"{digest[:16]}.parquet"
    directory.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        writer.path.replace(path)
    return Built(path, summary.summary(digest), columns, leaks.report(),
                 skews.report(rows_served=staged.served_rows), missing.report())


def _served_rows(con: duckdb.DuckDBPyConnection, staged: Staged, first_key, last_key) -> pd.DataFrame:
    """The staged served rows whose entity key lies in ``[first_key, last_key]`` (a part's keys: the label rows
    are in key order)."""
    if not staged.served_rows:
        return pd.DataFrame(columns=staged.served_columns)
    key = _q(staged.spec.entity.key)
    return con.execute(f"SELECT * FROM read_parquet({_lit(staged.served)}) WHERE {key} BETWEEN ? AND ? "
                       f"ORDER BY {key}, {scoring.PARTITION}", [_py(first_key), _py(last_key)]).df()


def _py(value):
    return value.item() if hasattr(value, "item") else value
