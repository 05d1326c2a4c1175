"""Training/serving skew: do the rows of a training set hold the feature values scoring served for them?

When a day is scored, the feature values each row was scored with are stored beside its prediction (the
served-features table of :mod:`batch_platform.lib.scoring`). Once the day's labels are final the same rows enter
a training set, rebuilt from the label model and Feast's point-in-time join. Both should see the same values: a
row's features as of its prediction cutoff. When they differ, the model is trained on inputs it will never be
served (a column taken from another source, a feature table rewritten after the fact, a join key filled in later,
a type changed on one path), and its offline metrics do not describe production.

:func:`compare` matches training rows and served rows on (entity key, training ``event_timestamp`` == served
``prediction_cutoff``) and compares every column present in both (apart from the key and the timestamps):

- a missing value (None, NaN, NaT, pandas NA) equals a missing value and nothing else;
- numbers are compared as float64 whatever their dtype (bool, int, pandas nullable Int64, float), exactly when
  both sides have integer (or bool) dtypes, else within a relative tolerance (default 1e-9, float round-off);
- timestamps are compared as UTC instants (naive ones are taken as UTC), exactly;
- anything else (strings, categoricals) as text, exactly. A column that is numeric (or a timestamp) on one side
  and text on the other is compared as text unless every text value parses, so a type change shows as skew.

A row is mismatched when any compared column differs. The check passes when at most ``threshold`` (default
0.1 %) of the compared rows are mismatched; with no row to compare (nothing of the training set was scored
before) it passes, and says so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batch_platform.lib.training_set import EVENT_TIMESTAMP

SERVED_TIMESTAMP = "prediction_cutoff"
THRESHOLD = 0.001
RTOL = 1e-9
MAX_EXAMPLES = 5
EXAMPLES_PER_COLUMN = 2


@dataclass
class SkewReport:
    rows_training: int
    rows_served: int
    rows_compared: int
    rows_mismatched: int
    threshold: float
    columns_compared: list[str] = field(default_factory=list)
    column_mismatches: dict[str, int] = field(default_factory=dict)  # columns with >= 1 mismatch, most first
    examples: list[dict[str, Any]] = field(default_factory=list)  # {key, column, served, training}

    @property
    def mismatch_share(self) -> float:
        return self.rows_mismatched / self.rows_compared if self.rows_compared else 0.0

    @property
    def passed(self) -> bool:
        return self.mismatch_share <= self.threshold

    def describe(self) -> str:
        if not self.rows_compared:
            return (f"nothing compared: none of the {self.rows_training} training rows was scored before (no served "
                    f"features at the same key and prediction cutoff among {self.rows_served} served rows read)")
        text = (f"{self.rows_mismatched} of {self.rows_compared} scored rows ({self.mismatch_share:.3%}) differ from "
                f"the feature values scoring served in at least one of {len(self.columns_compared)} columns "
                f"(limit {self.threshold:.1%})")
        if self.column_mismatches:
            text += ": " + ", ".join(f"{c} {n}" for c, n in list(self.column_mismatches.items())[:5])
            if len(self.column_mismatches) > 5:
                text += f", ... ({len(self.column_mismatches)} columns)"
        return text


def compare(
    training: pd.DataFrame,
    served: pd.DataFrame,
    *,
    key: str,
    training_timestamp: str = EVENT_TIMESTAMP,
    served_timestamp: str = SERVED_TIMESTAMP,
    exclude: Iterable[str] = (),
    threshold: float = THRESHOLD,
    rtol: float = RTOL,
    max_examples: int = MAX_EXAMPLES,
) -> SkewReport:
    """Compare the training rows that were scored before with the values scoring served for them (see the module
    docstring). ``exclude``: columns never compared (bookkeeping such as the served rows' run id)."""
    comparison = SkewComparison(served.columns, key=key, training_timestamp=training_timestamp,
                                served_timestamp=served_timestamp, exclude=exclude, threshold=threshold, rtol=rtol,
                                max_examples=max_examples)
    return comparison.add(training, served).report(rows_served=len(served))


class SkewComparison:
    """:func:`compare` of a training set given in parts, each with the served rows of its entity keys (a key's
    served rows all in the part holding its training rows), the parts in row order: the report of the whole."""

    def __init__(self, served_columns: Iterable[str], *, key: str, training_timestamp: str = EVENT_TIMESTAMP,
                 served_timestamp: str = SERVED_TIMESTAMP, exclude: Iterable[str] = (),
                 threshold: float = THRESHOLD, rtol: float = RTOL, max_examples: int = MAX_EXAMPLES) -> None:
        self._served_columns = list(served_columns)
        self._key, self._t_ts, self._s_ts = key, training_timestamp, served_timestamp
        self._skip = {key, training_timestamp, served_timestamp, *exclude}
        self._threshold, self._rtol, self._max_examples = threshold, rtol, max_examples
        self._columns: list[str] | None = None
        self._rows_training = self._rows_compared = self._rows_mismatched = 0
        self._mismatches: dict[str, int] = {}
        self._examples: dict[str, list[dict[str, Any]]] = {}  # the first EXAMPLES_PER_COLUMN of each column

    def add(self, training: pd.DataFrame, served: pd.DataFrame) -> SkewComparison:
        columns = [c for c in training.columns if c in self._served_columns and c not in self._skip]
        if self._columns is None:
            self._columns = columns
        elif columns != self._columns:
            raise ValueError(f"a part with other columns to compare: {columns} after {self._columns}")
        self._rows_training += len(training)
        if training.empty or served.empty:
            return self
        key = self._key
        served_pos = pd.Series(np.arange(len(served)), index=_match_index(served, key, self._s_ts))
        served_pos = served_pos[~served_pos.index.duplicated(keep="last")]  # a day is replaced whole: never expected
        matched = served_pos.reindex(_match_index(training, key, self._t_ts)).to_numpy()
        has = ~np.isnan(matched)
        t_rows, s_rows = np.flatnonzero(has), matched[has].astype(np.int64)
        if not len(t_rows):
            return self
        self._rows_compared += len(t_rows)
        any_bad = np.zeros(len(t_rows), dtype=bool)
        for col in columns:
            s_vals = served[col].iloc[s_rows].reset_index(drop=True)
            t_vals = training[col].iloc[t_rows].reset_index(drop=True)
            bad = ~values_equal(s_vals, t_vals, rtol=self._rtol)
            if not bad.any():
                continue
            any_bad |= bad
            self._mismatches[col] = self._mismatches.get(col, 0) + int(bad.sum())
            examples = self._examples.setdefault(col, [])
            for i in np.flatnonzero(bad)[:EXAMPLES_PER_COLUMN - len(examples)]:
                examples.append({
                    "key": _json_value(training[key].iloc[t_rows[i]]),
                    "column": col,
                    "served": _json_value(served[col].iloc[s_rows[i]]),
                    "training": _json_value(training[col].iloc[t_rows[i]]),
                })
        self._rows_mismatched += int(any_bad.sum())
        return self

    def report(self, *, rows_served: int) -> SkewReport:
        """``rows_served``: the served rows read for the whole training set."""
        order = sorted(self._mismatches, key=lambda c: (-self._mismatches[c], c))
        # Examples: the first mismatch of each column (most mismatched first), then a second one of each.
        picks = [self._examples[col][rank] for rank in range(EXAMPLES_PER_COLUMN) for col in order
                 if rank < len(self._examples[col])]
        return SkewReport(rows_training=self._rows_training, rows_served=rows_served,
                          rows_compared=self._rows_compared, rows_mismatched=self._rows_mismatched,
                          threshold=self._threshold, columns_compared=self._columns or [],
                          column_mismatches={c: self._mismatches[c] for c in order},
                          examples=picks[:self._max_examples])


def values_equal(a: pd.Series, b: pd.Series, *, rtol: float = RTOL) -> np.ndarray:
    """Element-wise equality of two aligned series under the rules of the module docstring."""
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    a_missing, b_missing = _missing(a), _missing(b)
    both_missing = a_missing & b_missing
    kinds = {_kind(a), _kind(b)}
    if "time" in kinds:
        ta, tb = _as_time(a, a_missing), _as_time(b, b_missing)
        if ta is not None and tb is not None:
            same = (ta == tb).to_numpy(dtype=bool)
            return both_missing | (same & ~a_missing & ~b_missing)
    elif "number" in kinds:
        na, nb = _as_number(a, a_missing), _as_number(b, b_missing)
        if na is not None and nb is not None:
            x, y = na, nb
            present = ~a_missing & ~b_missing
            with np.errstate(invalid="ignore"):
                if _integer_like(a) and _integer_like(b):
                    same = x == y
                else:
                    same = (x == y) | (np.abs(x - y) <= rtol * np.maximum(np.abs(x), np.abs(y)))
            return both_missing | (same & present)
    sa, sb = _as_text(a), _as_text(b)
    same = (sa == sb).fillna(False).to_numpy(dtype=bool)
    return both_missing | (same & ~a_missing & ~b_missing)


# ----------------------------------------------------------------------------------------------------------------
def _match_index(frame: pd.DataFrame, key: str, timestamp: str) -> pd.MultiIndex:
    ts = pd.to_datetime(frame[timestamp], utc=True).astype("datetime64[ns, UTC]")
    return pd.MultiIndex.from_arrays([frame[key].astype(str).to_numpy(), ts.astype("int64").to_numpy()])


def _missing(s: pd.Series) -> np.ndarray:
    return s.isna().to_numpy(dtype=bool)


def _kind(s: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "time"
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return "number"
    return "other"


def _integer_like(s: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)


def _as_number(s: pd.Series, missing: np.ndarray) -> np.ndarray | None:
    """float64 values (NaN where missing), or None when a present value is not a number."""
    if pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype("boolean").astype("Float64")
    values = pd.to_numeric(s, errors="coerce").astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    if (np.isnan(values) & ~missing).any():
        return None
    return values


def _as_time(s: pd.Series, missing: np.ndarray) -> pd.Series | None:
    """UTC timestamps (NaT where missing), or None when a present value is not a timestamp."""
    try:
        values = pd.to_datetime(s, utc=True, errors="coerce")
    except (TypeError, ValueError):
        return None
    if (values.isna().to_numpy() & ~missing).any():
        return None
    return values.astype("datetime64[ns, UTC]")


def _as_text(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = pd.to_datetime(s, utc=True).map(lambda v: v.isoformat() if pd.notna(v) else None)
    return s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v)).astype("string")


def _json_value(v: Any) -> Any:
    """A value for check metadata (JSON): None for missing, ISO text for instants, Python scalars."""
    if v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v if isinstance(v, (str, int, float, bool)) else str(v)
