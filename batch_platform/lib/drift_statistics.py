"""The drift check's distances, computed with numpy/scipy as Evidently defines them, without its report.

Evidently stays the definition (``tests/test_drift.py`` asserts these values equal its ``ValueDrift`` values to
1e-9 relative, and the verdicts are identical); this module computes the same numbers at the speed of the
statistics: each column is converted once, sorted once, and counted once.

- ``wasserstein`` (Evidently's ``wasserstein_stat_test``): ``scipy.stats.wasserstein_distance(ref, cur) /
  max(std(ref), 0.001)`` over the finite values of each side (Evidently drops NaN and ±inf first). Computed
  from the sorted reference (sorted once per reference side) and the sorted day: the two are merged by one
  ``searchsorted`` of the reference into the day and the integral of |F_ref - F_cur| is summed over the merged
  values, the same terms scipy sums.
- ``psi`` (Evidently's ``psi_stat_test`` on a categorical column): over the values seen on either side, the
  shares of each side, a zero share replaced by (smallest non-zero share of that side) / 1e6 when that share is at
  most 1e-4, else by 1e-4; PSI = Σ (ref - cur) · ln(ref / cur). Categories are counted as codes: a day's value
  maps to its reference category, to ``__missing__`` when missing, to ``__other__`` when the reference never saw
  it (:func:`batch_platform.lib.drift_reference.prepare` is the definition of that mapping); the score's bins are
  its frozen deciles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from batch_platform.lib.drift_reference import (
    MISSING, OTHER, PSI, SCORE, SCORE_BIN, WASSERSTEIN, DriftReference, DriftReferenceError)

MIN_NORM = 0.001  # Evidently's floor of the reference standard deviation that norms a Wasserstein distance
PSI_ZERO_SHARE = 1e-4  # a share Evidently puts in place of zero (or the smallest share / 1e6 when below it)


def normed_wasserstein(reference_sorted: np.ndarray, current_sorted: np.ndarray, norm: float) -> float:
    """First Wasserstein distance of two sorted finite samples divided by ``norm``; NaN when either is empty."""
    m, n = len(reference_sorted), len(current_sorted)
    if m == 0 or n == 0:
        return float("nan")
    at = np.searchsorted(current_sorted, reference_sorted, side="left") + np.arange(m)  # reference in the merge
    is_ref = np.zeros(m + n, dtype=bool)
    is_ref[at] = True
    merged = np.empty(m + n, dtype="float64")
    merged[at] = reference_sorted
    merged[~is_ref] = current_sorted
    # below a value strictly smaller than the next one, the merge holds every value <= it: the counts so far are
    # the CDFs there (where the next value is equal the interval has no width and the term is 0)
    ref_count = np.cumsum(is_ref)[:-1]
    cur_count = np.arange(1, m + n) - ref_count
    gaps = np.diff(merged)
    # summed without BLAS (scipy uses vecdot, whose threads wait on a busy machine): equal to 1e-15 relative
    return float(np.sum(np.abs(ref_count / m - cur_count / n) * gaps)) / norm


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Evidently's PSI of two count vectors over the same categories; NaN when either side has no value."""
    seen = (reference_counts > 0) | (current_counts > 0)
    ref, cur = reference_counts[seen], current_counts[seen]
    if ref.sum() == 0 or cur.sum() == 0:
        return float("nan")
    ref_share, cur_share = _fill_zeros(ref / ref.sum()), _fill_zeros(cur / cur.sum())
    return float(np.sum((ref_share - cur_share) * np.log(ref_share / cur_share)))


def _fill_zeros(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares != 0].min()
    return np.where(shares == 0, smallest / 10**6 if smallest <= PSI_ZERO_SHARE else PSI_ZERO_SHARE, shares)


def category_space(ref: DriftReference, column: str) -> list[str]:
    """The values a prepared categorical column can hold: the reference's categories, then ``__other__``."""
    categories = list(ref.categories[column])
    return categories + ([] if OTHER in categories else [OTHER])


def _score_bins(scores: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.digitize(scores, edges)  # NaN lands in the top bin, as prepare's labels do


@dataclass
class Side:
    """One side of the comparison, in the form the distances use: per numeric column (and the score) its finite
    values sorted; per categorical column (and the score's bins) its counts over the category space."""
    rows: int
    sorted: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    means: dict[str, float | None] = field(default_factory=dict)  # numeric columns: nanmean (None: all missing)
    missing: dict[str, float] = field(default_factory=dict)  # features: missing share before any mapping


def _numeric(side: Side, column: str, values: np.ndarray) -> None:
    side.sorted[column] = np.sort(values[np.isfinite(values)])
    side.means[column] = float(np.nanmean(values)) if (~np.isnan(values)).any() else None


def reference_side(ref: DriftReference, rows: np.ndarray | None = None) -> Side:
    """The reference sample (or its ``rows``, a boolean mask) as a :class:`Side`."""
    sample = ref.sample if rows is None else ref.sample[rows]
    side = Side(rows=len(sample))
    for c in ref.numeric + [SCORE]:
        _numeric(side, c, sample[c].to_numpy(dtype="float64", na_value=np.nan))
    for c in ref.categorical:
        space = category_space(ref, c)
        codes = pd.Index(space).get_indexer(sample[c].astype(str))
        codes[codes < 0] = space.index(OTHER)
        side.counts[c] = np.bincount(codes, minlength=len(space))
    side.counts[SCORE_BIN] = np.bincount(_score_bins(sample[SCORE].to_numpy(dtype="float64"), ref.score_edges),
                                         minlength=len(ref.score_edges) + 1)
    return side


def _category_codes(column: pd.Series, space: list[str]) -> tuple[np.ndarray, float]:
    """Codes into ``space`` as :func:`prepare` maps the column (missing -> ``__missing__``, unseen ->
    ``__other__``), and the column's missing share. Each distinct value is converted to text once."""
    index, other = pd.Index(space), space.index(OTHER)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)  # missing -> -1
    if column.dtype == object and not all(isinstance(u, str) for u in uniques):
        # mixed Python objects (1 and 1.0 are one key to factorize, two texts to prepare): convert every row
        text = column.astype("string").fillna(MISSING).astype(str)
        mapped = index.get_indexer(text)
        mapped[mapped < 0] = other
        return mapped, float(column.isna().mean())
    names = pd.Series(uniques).astype("string").fillna(MISSING).astype(str).tolist() + [MISSING]
    lookup = index.get_indexer(names)
    lookup[lookup < 0] = other
    return lookup[codes], float((codes < 0).mean()) if len(codes) else float("nan")


def current_side(ref: DriftReference, features: pd.DataFrame, scores: np.ndarray) -> Side:
    """A scored batch as a :class:`Side` in the reference's terms (the same values :func:`prepare` gives)."""
    absent = [c for c in ref.numeric + ref.categorical if c not in features.columns]
    if absent:
        raise DriftReferenceError(f"the scored batch lacks reference column(s) {absent}")
    side = Side(rows=len(features))
    for c in ref.numeric:
        column = features[c]
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            values = column.to_numpy(dtype="float64", na_value=np.nan)
        else:
            values = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
        _numeric(side, c, values)
        side.missing[c] = float(column.isna().mean())
    for c in ref.categorical:
        space = category_space(ref, c)
        codes, side.missing[c] = _category_codes(features[c], space)
        side.counts[c] = np.bincount(codes, minlength=len(space))
    scores = np.asarray(scores, dtype="float64")
    if len(scores) != len(features):
        raise DriftReferenceError(f"{len(scores)} scores for {len(features)} rows")
    _numeric(side, SCORE, scores)
    side.counts[SCORE_BIN] = np.bincount(_score_bins(scores, ref.score_edges), minlength=len(ref.score_edges) + 1)
    return side


def distances(ref: DriftReference, reference: Side, current: Side,
              tests: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], float]:
    """``{(column, method): value}`` of every test of the reference (or ``tests``); NaN where a side has no
    value."""
    out = {}
    for column, method in tests if tests is not None else ref.tests():
        if method == WASSERSTEIN:
            base = reference.sorted[column]
            norm = max(float(np.std(base)), MIN_NORM) if len(base) else MIN_NORM
            out[(column, method)] = normed_wasserstein(base, current.sorted[column], norm)
        elif method == PSI:
            out[(column, method)] = psi(reference.counts[column], current.counts[column])
        else:
            raise ValueError(f"unknown drift method {method!r}")
    return out
