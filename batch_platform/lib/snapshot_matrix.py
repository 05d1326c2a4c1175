"""A training-set snapshot (Parquet) read as LightGBM's model matrix one row group at a time: the out-of-core path
of training and of scoring the snapshot's windows.

:func:`training.train` takes the whole training set as one DataFrame, and LightGBM's pandas path copies it again
as one float matrix: memory grows with rows. Here the rows stay in the file. A first pass
(:func:`read_layout`) reads what has to be known of every row -- its window, its label, the entity key (to check the
row order) -- and the training window's categories; :class:`WindowRows` then serves one window's rows to LightGBM as a
``lightgbm.Sequence``: LightGBM samples rows to find the bins, then pushes the rows in batches into its binned
``Dataset``, and only one row group's matrix is in memory at a time. What grows with rows is the labels and the
binned ``Dataset`` (a byte or two per feature and row), not the frame.

The matrix is :func:`training.prepare_matrix`'s, converted as LightGBM converts a DataFrame (categoricals as their
category codes, a missing one as NaN): the same values, so the same bins and the same model as the in-memory path.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import LABEL, SPLIT

LAYOUT_BATCH_ROWS = 65_536  # rows per batch of the first pass


def model_matrix(frame: pd.DataFrame, features: list[str], categorical: list[str],
                 categories: dict[str, list]) -> np.ndarray:
    """:func:`training.prepare_matrix` of ``frame`` as the float64 matrix LightGBM makes of it (categoricals as
    their codes in ``categories``, NaN where missing or unknown)."""
    from batch_platform.lib.training import prepare_matrix

    X = prepare_matrix(frame, features, categorical, categories)
    out = np.empty((len(X), len(features)), dtype=np.float64)
    for i, c in enumerate(features):
        if c in categorical:
            codes = X[c].cat.codes.to_numpy()
            out[:, i] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, i] = X[c].to_numpy(dtype=np.float64)
    return out


@dataclass(frozen=True)
class SnapshotLayout:
    """What the first pass over a snapshot learns: each row's window and label (file order), the feature columns,
    and the categories of each categorical feature (sorted, as seen in the training window)."""

    path: Path
    windows: np.ndarray  # per row, the window's name (an index into window_names)
    window_names: tuple[str, ...]
    labels: np.ndarray
    features: list[str]
    categorical: list[str]
    categories: dict[str, list]
    nullable_ints: frozenset[str] = frozenset()

    def positions(self, window: str) -> np.ndarray:
        """The file rows of ``window``, ascending."""
        if window not in self.window_names:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.windows == self.window_names.index(window))


def _with_nulls(file: pq.ParquetFile) -> set[str]:
    """The columns holding a null in some row (from the row groups' statistics; a column without them is read)."""
    meta, out = file.metadata, set()
    for i, name in enumerate(file.schema_arrow.names):
        stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count for s in stats):
            if any(s.null_count for s in stats):
                out.add(name)
        elif file.read(columns=[name]).column(0).null_count:
            out.add(name)
    return out


def _nullable_ints(file: pq.ParquetFile, nulls: set[str] | None = None) -> set[str]:
    """The integer columns with a null somewhere (``nulls``: :func:`_with_nulls`): pandas has them as float64,
    unless the file's pandas metadata types the column (e.g. as ``Int64``, which holds nulls)."""
    nulls = _with_nulls(file) if nulls is None else nulls
    typed = {c["name"]: c["numpy_type"] for c in (file.schema_arrow.pandas_metadata or {}).get("columns", [])}
    return {f.name for f in file.schema_arrow if pa.types.is_integer(f.type) and f.name in nulls
            and (f.name not in typed or typed[f.name].islower())}


def _whole_file_frame(table: pa.Table, nullable_ints: set[str]) -> pd.DataFrame:
    """``table`` (rows of ``file``) as pandas types it as part of the whole file: an integer column with a null
    anywhere in the file is float64 (as pandas has it then), not only in the row groups that hold one."""
    for name in nullable_ints & set(table.column_names):
        table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.float64()))
    return table.to_pandas()


class UnsortedSnapshotError(ValueError):
    """The snapshot's rows are not in entity-key order (training sets are written in that order)."""


def read_layout(path: Path, spec: ModelSpec, *, batch_rows: int = LAYOUT_BATCH_ROWS) -> SnapshotLayout:
    """The first pass over the snapshot at ``path``: only the window, label, entity key and categorical columns are
    read, a batch at a time. Raises :class:`UnsortedSnapshotError` when the rows are not in entity-key order (the
    in-memory path sorts them; here the file order is the training order)."""
    from batch_platform.lib.training import feature_columns

    file = pq.ParquetFile(path)
    with_nulls = _with_nulls(file)
    # the columns' pandas types as in the whole file: one row, null in every column that has a null somewhere
    probe = file.read_row_group(0).slice(0, 1) if file.metadata.num_rows else file.schema_arrow.empty_table()
    for name in with_nulls:
        i = probe.column_names.index(name)
        probe = probe.set_column(i, name, pa.nulls(probe.num_rows, probe.schema.field(i).type))
    features, categorical = feature_columns(spec, probe.to_pandas())
    nullable_ints = _nullable_ints(file, with_nulls)
    key = spec.entity.key
    names: dict[str, int] = {}
    windows, labels = [], []
    seen: dict[str, set] = {c: set() for c in categorical}
    last = None
    for batch in file.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys([SPLIT, LABEL, key,
                                                                                     *categorical]))):
        frame = _whole_file_frame(pa.Table.from_batches([batch]), nullable_ints)
        keys = frame[key]
        if not keys.is_monotonic_increasing or (last is not None and len(keys) and keys.iloc[0] < last):
            raise UnsortedSnapshotError(f"{path}: rows are not in {key} order")
        if len(keys):
            last = keys.iloc[-1]
        split = frame[SPLIT].astype(object)
        for name in split.unique():
            names.setdefault(name, len(names))
        windows.append(split.map(names).to_numpy(dtype=np.int8))
        labels.append(frame[LABEL].to_numpy())
        train = frame[split == "train"]
        for c in categorical:
            values = train[c].astype("string").astype(object).where(train[c].notna(), None)
            seen[c].update(v for v in values.unique() if v is not None)
    return SnapshotLayout(
        path=Path(path),
        windows=np.concatenate(windows) if windows else np.empty(0, dtype=np.int8),
        window_names=tuple(names),
        labels=np.concatenate(labels) if labels else np.empty(0),
        features=features, categorical=categorical,
        categories={c: sorted(seen[c]) for c in categorical},
        nullable_ints=frozenset(nullable_ints),
    )


def group_matrix(file: pq.ParquetFile | Path | str, group: int, rows: np.ndarray, features: list[str],
                 categorical: list[str], categories: dict[str, list], nullable_ints: set[str] | frozenset[str]
                 ) -> np.ndarray:
    """The model matrix (:func:`model_matrix`) of ``rows`` (row numbers within the group) of row group ``group``
    of the snapshot ``file`` (a path where it runs elsewhere, e.g. on a Dask worker)."""
    if not isinstance(file, pq.ParquetFile):
        file = pq.ParquetFile(file)
    table = file.read_row_group(group, columns=features).take(rows)
    return model_matrix(_whole_file_frame(table, set(nullable_ints)), features, categorical, categories)


class WindowRows:
    """One window's rows of a snapshot as the model matrix (:func:`model_matrix`), read a row group at a time (the
    last one read is kept: LightGBM's sampling and its batches go through the rows in order). A
    ``lightgbm.Sequence`` (registered as one where LightGBM is imported, :func:`as_lightgbm_sequence`: this module
    does not import LightGBM, which the definitions load would then pay for)."""

    def __init__(self, layout: SnapshotLayout, window: str, *, features: list[str] | None = None,
                 categorical: list[str] | None = None, categories: dict[str, list] | None = None,
                 batch_size: int = 4096):
        self.features = layout.features if features is None else features
        self.categorical = layout.categorical if categorical is None else categorical
        self.categories = layout.categories if categories is None else categories
        self.batch_size = batch_size
        self._file = pq.ParquetFile(layout.path)
        meta = self._file.metadata
        self._group_starts = np.concatenate([[0], np.cumsum([meta.row_group(i).num_rows
                                                             for i in range(meta.num_row_groups)])])
        self._positions = layout.positions(window)
        self._nullable_ints = set(layout.nullable_ints)
        # where each row group's rows begin among the window's rows
        self._starts = np.searchsorted(self._positions, self._group_starts)
        self._cached: tuple[int, np.ndarray | None] = (-1, None)
        self._span = (0, 0)  # the window rows [first, end) the cached group holds: LightGBM's sampling asks for rows
        # one at a time (200k of them by default), so a row of the cached group is served without a search

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def row_groups(self) -> list[tuple[int, np.ndarray]]:
        """``(row group, the window's rows in it as row numbers within the group)`` of every row group holding
        rows of the window, in order: :func:`group_matrix`'s arguments."""
        return [(g, self._positions[self._starts[g]:self._starts[g + 1]] - self._group_starts[g])
                for g in range(len(self._group_starts) - 1) if self._starts[g + 1] > self._starts[g]]

    def _group(self, g: int) -> np.ndarray:
        if self._cached[0] != g:
            self._cached, self._span = (-1, None), (0, 0)  # the previous group's matrix is freed before the next
            # one is read
            local = self._positions[self._starts[g]:self._starts[g + 1]] - self._group_starts[g]
            self._cached = (g, group_matrix(self._file, g, local, self.features, self.categorical, self.categories,
                                            self._nullable_ints))
            self._span = (int(self._starts[g]), int(self._starts[g + 1]))
        return self._cached[1]

    def _group_of(self, i: int) -> int:
        return int(np.searchsorted(self._starts, i, side="right")) - 1

    def __getitem__(self, idx):
        first, end = self._span
        if isinstance(idx, (int, np.integer)) and first <= idx < end:  # (LightGBM's indices are numpy's)
            return self._cached[1][idx - first]
        if isinstance(idx, numbers.Integral):
            if not 0 <= idx < len(self):
                raise IndexError(idx)
            g = self._group_of(idx)
            return self._group(g)[idx - self._starts[g]]
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("WindowRows takes slices with step 1")
            parts = []
            while start < stop:
                g = self._group_of(start)
                end = min(stop, int(self._starts[g + 1]))
                parts.append(self._group(g)[start - self._starts[g]:end - self._starts[g]])
                start = end
            return parts[0] if len(parts) == 1 else np.vstack(parts) if parts else \
                np.empty((0, len(self.features)))
        if isinstance(idx, list):
            return np.array([self[i] for i in idx])
        raise TypeError(f"WindowRows index must be an integer, a slice or a list, got {type(idx).__name__}")

    def batches(self):
        """The window's rows as model-matrix batches, in order (for scoring)."""
        for start in range(0, len(self), self.batch_size):
            yield self[start:start + self.batch_size]


def read_windows(path: Path, windows: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``windows`` (e.g. ``("test",)``) in file order, typed as ``pd.read_parquet`` types the whole
    file: what ``frame[frame[SPLIT].isin(windows)]`` would hold, without reading the other windows into memory."""
    file = pq.ParquetFile(path)
    table = pq.read_table(path, filters=[(SPLIT, "in", list(windows))])
    return _whole_file_frame(table, _nullable_ints(file))


def window_parts(path: Path, windows: tuple[str, ...]) -> tuple[int, Callable[[], Iterator[pd.DataFrame]]]:
    """(the rows of ``windows``, a function yielding them a row group at a time): the rows of
    :func:`read_windows` in the same order and typed as it types them, never more than a row group's at once
    (at least one part: an empty frame for no rows)."""
    with pq.ParquetFile(path) as file:
        nullable = _nullable_ints(file)
        wanted = pa.array(list(windows), file.schema_arrow.field(SPLIT).type)
        total = int(pc.sum(pc.is_in(file.read(columns=[SPLIT]).column(0), value_set=wanted)).as_py() or 0)

    def parts() -> Iterator[pd.DataFrame]:
        yielded = False
        with pq.ParquetFile(path) as source:
            for g in range(source.metadata.num_row_groups):
                group = source.read_row_group(g)
                rows = group.filter(pc.is_in(group.column(SPLIT), value_set=wanted))
                if rows.num_rows:
                    yielded = True
                    yield _whole_file_frame(rows, nullable)
            if not yielded:
                yield _whole_file_frame(source.schema_arrow.empty_table(), nullable)

    return total, parts


def column_range(path: Path, windows: tuple[str, ...], column: str) -> tuple:
    """(min, max) of ``column`` over the rows of ``windows``, as pandas gives them of :func:`read_windows`'s frame,
    reading that column only."""
    table = pq.read_table(path, columns=[column], filters=[(SPLIT, "in", list(windows))])
    values = _whole_file_frame(table, _nullable_ints(pq.ParquetFile(path)))[column]
    return values.min(), values.max()


def read_tail(path: Path, rows: int) -> pd.DataFrame:
    """The last ``rows`` rows (``frame.tail(rows)``), reading only the row groups that hold them."""
    file = pq.ParquetFile(path)
    meta, groups, n = file.metadata, [], 0
    for g in reversed(range(meta.num_row_groups)):
        if n >= rows:
            break
        groups.insert(0, g)
        n += meta.row_group(g).num_rows
    table = file.read_row_groups(groups) if groups else file.schema_arrow.empty_table()
    return _whole_file_frame(table.slice(max(0, table.num_rows - rows)), _nullable_ints(file))


def as_lightgbm_sequence(rows: WindowRows) -> WindowRows:
    """``rows``, which LightGBM now takes as a ``lightgbm.Sequence`` (an abstract base class: registered)."""
    import lightgbm as lgb

    lgb.Sequence.register(WindowRows)
    return rows
