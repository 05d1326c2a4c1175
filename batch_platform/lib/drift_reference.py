"""The drift reference: what a model version's training window looked like, frozen when the version is trained.

:func:`build_reference` samples up to ``rows`` training rows (the model's features plus its score) and freezes,
besides the sample: the categories of categorical columns, decile edges of the score, each column's missing
share over the whole training window, groups of strongly correlated columns, and the **calibration**: the training
rows are split into the batches scoring would have seen (one per prediction cutoff, i.e. per flight day), and
each batch's distance to the sample rows of the *other* batches is computed per column with the same tests the
daily check uses (:mod:`batch_platform.lib.drift_statistics`). That is what normal day-to-day variation of each column looks like within the
training window; :mod:`batch_platform.lib.drift` judges a scored day against it.

:func:`save_reference` writes it content-addressed (one parquet file, the frozen parts as JSON in its metadata);
the path and sha256 go into the model version's fingerprint and :func:`load_reference` verifies them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.lib.training_set import EVENT_TIMESTAMP

SCORE = "prediction_score"
SCORE_BIN = "prediction_score_bin"
OTHER = "__other__"
MISSING = "__missing__"
WASSERSTEIN, PSI = "wasserstein", "psi"
GROUP_CORRELATION = 0.8  # |Spearman ρ| in the reference sample at or above which two numeric columns share a group
MIN_BATCH_ROWS = 100  # training batches (days) smaller than this are not used for the calibration
MIN_CALIBRATION_BATCHES = 7  # fewer usable batches: the reference is not calibrated
_META_KEY = b"batch_platform.drift_reference"


class DriftReferenceError(RuntimeError):
    """A drift reference is missing, altered (sha256 mismatch) or does not fit the batch."""


@dataclass
class DriftReference:
    sample: pd.DataFrame  # feature columns + SCORE
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    score_edges: list[float]
    reference_std: dict[str, float]
    source: dict = field(default_factory=dict)  # where it came from: spec, windows, rows sampled of how many
    missing_share: dict[str, float] = field(default_factory=dict)  # per column, over every training row
    groups: list[list[str]] = field(default_factory=list)  # feature columns; correlated ones share a group
    # {"batch_column", "batches": [...], "rows": [...], "distances": {column: [one per batch]}}; {} = none
    calibration: dict = field(default_factory=dict)

    def tests(self) -> list[tuple[str, str]]:
        """(column, method) of every distance the drift check computes, score included."""
        return ([(c, WASSERSTEIN) for c in self.numeric] + [(SCORE, WASSERSTEIN)]
                + [(c, PSI) for c in self.categorical] + [(SCORE_BIN, PSI)])

    def group_of(self, column: str) -> str:
        for g in self.groups:
            if column in g:
                return g[0]
        return column

    def calibrated(self, column: str) -> list[float]:
        """The distances of the training batches to the rest of the training window ([] when not calibrated)."""
        return [v for v in self.calibration.get("distances", {}).get(column, []) if v is not None]

    def meta(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical, "categories": self.categories,
                "score_edges": self.score_edges, "reference_std": self.reference_std, "source": self.source,
                "missing_share": self.missing_share, "groups": self.groups, "calibration": self.calibration}


def score_bins(values: pd.Series, edges: list[float]) -> pd.Series:
    return pd.Series(np.digitize(values.to_numpy(), edges), index=values.index).map(lambda b: f"bin{b:02d}")


def prepare(ref: DriftReference, features: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """A batch in the reference's terms: numeric columns as float64, categories outside the reference's as
    ``__other__``, missing categories as ``__missing__``, the score and its frozen bin."""
    missing = [c for c in ref.numeric + ref.categorical if c not in features.columns]
    if missing:
        raise DriftReferenceError(f"the scored batch lacks reference column(s) {missing}")
    cur = pd.DataFrame(index=range(len(features)))
    for c in ref.numeric:
        cur[c] = pd.to_numeric(features[c].reset_index(drop=True), errors="coerce").astype("float64")
    for c in ref.categorical:
        values = features[c].reset_index(drop=True).astype("string").fillna(MISSING).astype(str)
        cur[c] = values.where(values.isin(ref.categories[c]), OTHER)
    cur[SCORE] = np.asarray(scores, dtype="float64")
    cur[SCORE_BIN] = score_bins(cur[SCORE], ref.score_edges)
    return cur


def missing_shares(ref: DriftReference, features: pd.DataFrame) -> dict[str, float]:
    """Share of missing values per reference column, before any category mapping."""
    return {c: float(features[c].isna().mean()) for c in ref.numeric + ref.categorical}


def _groups(sample: pd.DataFrame, numeric: list[str], categorical: list[str]) -> list[list[str]]:
    """Single-linkage groups of numeric columns with |Spearman ρ| >= GROUP_CORRELATION; categoricals alone."""
    parent = {c: c for c in numeric + categorical}

    def root(c):
        while parent[c] != c:
            c = parent[c]
        return c

    if len(numeric) > 1:
        rho = sample[numeric].corr(method="spearman").abs()
        for i, a in enumerate(numeric):
            for b in numeric[i + 1:]:
                if rho.loc[a, b] >= GROUP_CORRELATION:
                    parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for c in numeric + categorical:
        groups.setdefault(root(c), []).append(c)
    return sorted(groups.values(), key=lambda g: g[0])


def _calibration_values(ref: DriftReference, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per numeric column the frame's values as float64, per categorical column their codes in the reference's
    category space: what the calibration compares (of a whole frame, or of its parts, then concatenated)."""
    from batch_platform.lib import drift_statistics as ds  # it builds on this module's reference

    values = {}
    for c in ref.numeric:
        column = frame[c]
        values[c] = (column.to_numpy(dtype="float64", na_value=np.nan)
                     if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype)
                     else pd.to_numeric(column, errors="coerce").astype("float64").to_numpy())
    for c in ref.categorical:
        values[c] = ds._category_codes(frame[c].reset_index(drop=True), ds.category_space(ref, c))[0]
    return values


def _calibrate(ref: DriftReference, frame: pd.DataFrame, scores: np.ndarray, batches: pd.Series,
               sample_batches: np.ndarray) -> dict:
    """Distance of each training batch (all its rows) to the sample rows of the other batches, per test."""
    return _calibrate_values(ref, _calibration_values(ref, frame), scores, batches, sample_batches)


def _calibrate_values(ref: DriftReference, whole: dict[str, np.ndarray], scores: np.ndarray, batches: pd.Series,
                      sample_batches: np.ndarray) -> dict:
    """:func:`_calibrate` of the frame's :func:`_calibration_values` (``whole``).

    The same values as :func:`drift_statistics.current_side` of the batch against
    :func:`drift_statistics.reference_side` of the other batches' sample rows, and the same distances: every
    column is converted once for the whole frame and the sample is sorted once; a batch's side is then its rows'
    slice, and the reference without the batch is the sorted sample with the batch's rows masked out (still
    sorted) and the category counts less the batch's."""
    from batch_platform.lib import drift_statistics as ds  # it builds on this module's reference

    tests = ref.tests()
    scores = np.asarray(scores, dtype="float64")
    whole = {**whole, SCORE: scores, SCORE_BIN: ds._score_bins(scores, ref.score_edges)}

    reference = ds.reference_side(ref)  # every sample row: sorted numeric values, category counts
    # batches as integer codes in key order (the frame's and the sample rows'); comparing codes, not the keys
    batch_codes, uniques = pd.factorize(batches, sort=True)  # a missing key: -1, in no batch
    sample_batches = pd.Index(uniques).get_indexer(pd.Index(sample_batches))
    sample_sorted = {}  # numeric: (sorted finite values, the batch of each)
    for c in ref.numeric + [SCORE]:
        values = ref.sample[c].to_numpy(dtype="float64", na_value=np.nan)
        finite = np.flatnonzero(np.isfinite(values))
        order = finite[np.argsort(values[finite], kind="stable")]
        sample_sorted[c] = (values[order], sample_batches[order])
    sample_codes = {}
    for c in ref.categorical:
        space = ds.category_space(ref, c)
        codes = pd.Index(space).get_indexer(ref.sample[c].astype(str))
        codes[codes < 0] = space.index(OTHER)
        sample_codes[c] = (codes, len(space))
    sample_codes[SCORE_BIN] = (ds._score_bins(ref.sample[SCORE].to_numpy(dtype="float64"), ref.score_edges),
                               len(ref.score_edges) + 1)

    keys, rows, values = [], [], {c: [] for c, _ in tests}
    order = np.argsort(batch_codes, kind="stable")
    bounds = np.searchsorted(batch_codes[order], np.arange(len(uniques) + 1))
    for key in range(len(uniques)):
        pos = order[bounds[key]:bounds[key + 1]]
        if len(pos) < MIN_BATCH_ROWS:
            continue
        current, others = ds.Side(rows=len(pos)), ds.Side(rows=int((sample_batches != key).sum()))
        for c, (vals, where) in sample_sorted.items():
            batch = whole[c][pos]
            current.sorted[c] = np.sort(batch[np.isfinite(batch)])
            others.sorted[c] = vals[where != key]
        for c, (codes, size) in sample_codes.items():
            current.counts[c] = np.bincount(whole[c][pos], minlength=size)
            others.counts[c] = reference.counts[c] - np.bincount(codes[sample_batches == key], minlength=size)
        d = ds.distances(ref, others, current)
        keys.append(str(uniques[key]))
        rows.append(int(len(pos)))
        for c, m in tests:
            v = d[(c, m)]
            values[c].append(round(v, 6) if np.isfinite(v) else None)
    if len(keys) < MIN_CALIBRATION_BATCHES:
        return {}
    return {"batch_column": str(batches.name), "batches": keys, "rows": rows, "distances": values}


def build_reference(frame: pd.DataFrame, features: list[str], categorical: list[str], scores: np.ndarray, *,
                    rows: int = 5000, seed: int = 0, exclude: list[str] = (), source: dict | None = None,
                    batch_column: str | None = EVENT_TIMESTAMP) -> DriftReference:
    """Freeze a reference from the training frame (the rows the model learned from) and the model's scores.

    ``batch_column`` groups the rows into the batches scoring sees: by default the prediction cutoff each
    training row is timestamped at (one per flight day). Without it in ``frame`` the reference is not
    calibrated (its drift verdicts can then only WARN, see :mod:`batch_platform.lib.drift`)."""
    if len(frame) != len(scores):
        raise ValueError("one score per frame row")
    scores = np.asarray(scores, dtype="float64")
    return build_reference_in_parts(lambda: iter([frame]), len(frame), features, categorical, lambda part: scores,
                                    rows=rows, seed=seed, exclude=exclude, source=source, batch_column=batch_column)


def build_reference_in_parts(parts: Callable[[], Iterator[pd.DataFrame]], total_rows: int, features: list[str],
                             categorical: list[str], score: Callable[[pd.DataFrame], np.ndarray], *,
                             rows: int = 5000, seed: int = 0, exclude: list[str] = (), source: dict | None = None,
                             batch_column: str | None = EVENT_TIMESTAMP) -> DriftReference:
    """:func:`build_reference` of the frame whose rows ``parts()`` yields in parts (``total_rows`` in all, at least
    one part, each typed as the whole frame), with ``score(part)`` its scores: the same reference, while only a
    part's rows are held as a frame. Reads the parts twice when calibrating (first the sample, the missing shares
    and the scores, then each column's values in the sample's category space: compact arrays of every row)."""
    idx = np.sort(np.random.default_rng(seed).choice(total_rows, size=min(rows, total_rows), replace=False))
    first, pieces, scored, batch_parts, offset = None, [], [], [], 0
    missing: dict[str, int] = {}
    for part in parts():
        if first is None:
            first = part
            keep = [c for c in features if c not in set(exclude)]
            cats = [c for c in keep if c in set(categorical)]
            nums = [c for c in keep if c not in set(categorical) and pd.api.types.is_numeric_dtype(part[c])
                    and not pd.api.types.is_bool_dtype(part[c])]
            calibrated = batch_column is not None and batch_column in part.columns
        local = idx[(idx >= offset) & (idx < offset + len(part))] - offset
        if len(local) or not pieces and offset + len(part) >= total_rows:
            pieces.append(part.iloc[local][nums + cats])
        for c in nums + cats:
            missing[c] = missing.get(c, 0) + int(part[c].isna().sum())
        scored.append(np.asarray(score(part), dtype="float64"))
        if calibrated:
            batch_parts.append(part[batch_column].copy())
        offset += len(part)
    only = first if len(scored) == 1 else None  # a whole frame is not read again (a part's first is let go)
    first = part = None
    if offset != total_rows:
        raise ValueError(f"the parts hold {offset} rows, not {total_rows}")
    scores = np.concatenate(scored)
    if len(scores) != total_rows:
        raise ValueError("one score per frame row")
    sample = pd.concat(pieces).reset_index(drop=True).copy() if len(pieces) > 1 else pieces[0].reset_index(drop=True)
    for c in nums:
        sample[c] = pd.to_numeric(sample[c], errors="coerce").astype("float64")
    for c in cats:
        sample[c] = sample[c].astype("string").fillna(MISSING).astype(str)
    sample[SCORE] = scores[idx]
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, 11)[1:-1]))
    ref = DriftReference(
        sample=sample, numeric=nums, categorical=cats,
        categories={c: sorted(sample[c].unique().tolist()) for c in cats},
        score_edges=[float(e) for e in edges],
        reference_std={c: float(np.nanstd(sample[c].to_numpy())) for c in nums + [SCORE]},
        source={"rows": int(len(sample)), "of_rows": int(total_rows), "seed": seed, **(source or {})},
        missing_share={c: float(missing[c] / total_rows) if total_rows else float("nan") for c in nums + cats},
        groups=_groups(sample, nums, cats),
    )
    if calibrated:
        batches = pd.concat(batch_parts, ignore_index=True)
        whole, at = {}, 0  # every row's values, filled a part at a time
        for part in [only] if only is not None else parts():
            for c, values in _calibration_values(ref, part).items():
                whole.setdefault(c, np.empty(total_rows, dtype=values.dtype))[at:at + len(values)] = values
            at += len(part)
        ref.calibration = _calibrate_values(ref, whole, scores, batches, batches.iloc[idx])
    return ref


def save_reference(ref: DriftReference, directory: Path) -> tuple[Path, str]:
    """Write ``<directory>/<sha256[:16]>.parquet`` (the frozen parts in the file's metadata); returns path, sha256."""
    table = pa.Table.from_pandas(ref.sample, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          _META_KEY: json.dumps(ref.meta(), sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sha[:16]}.parquet"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path, sha


def load_reference(path: Path | str, sha256: str) -> DriftReference:
    """Read a reference after verifying its sha256. References frozen before calibration existed load without
    one (no missing shares, groups or calibration)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DriftReferenceError(f"drift reference {path} is missing") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DriftReferenceError(f"drift reference {path} was altered: sha256 {actual} != {sha256}")
    table = pq.read_table(io.BytesIO(data))
    meta = json.loads(table.schema.metadata[_META_KEY])
    return DriftReference(sample=table.to_pandas(), numeric=meta["numeric"], categorical=meta["categorical"],
                          categories=meta["categories"], score_edges=meta["score_edges"],
                          reference_std=meta["reference_std"], source=meta.get("source", {}),
                          missing_share=meta.get("missing_share", {}), groups=meta.get("groups", []),
                          calibration=meta.get("calibration", {}))
