"""Missingness audit: does a column's *absence* predict the label?

The columns a model takes from the entity frame (Feast join keys, passthrough features) must be known before the
prediction cutoff. A value that upstream fills in only once the outcome is known (a tail number assigned to
flights that did depart, a gate recorded for flights that boarded) leaves the frame looking honest column by
column while its missingness encodes the label: the model learns "missing -> positive", which serving can never
reproduce the evening before. Value-based leakage checks do not see this; comparing label rates does.

:func:`audit` splits the rows of each column into present / missing (None, NaN, NaT, pandas NA, or a string
that is empty or a placeholder such as ``UNKNOWN`` after stripping, :data:`MISSING_TOKENS`) and compares the label
rates of the two groups. Rule (two-sided, per column):

- the column is **judged** only when both groups hold at least ``min_group_rows`` rows (default 30): smaller
  groups cannot show a rate difference reliably, and a column without missing values cannot leak this way;
- it **fails** when the difference is both *significant* and *material*: the two-proportion z statistic
  (pooled rate) has ``|z| >= z_threshold`` (default 4, about 1 in 16,000 for an honest column, so a frame of a
  few dozen columns passes by chance almost always) **and** ``|rate_missing - rate_present| >=
  max(min_abs_diff, min_rel_diff * overall rate)`` (defaults 0.02 and 0.5), so a very large frame cannot fail
  on a negligible difference.

A numeric label (a regression spec, ``regression=True``) is audited the same way on its means: the z statistic is
the difference of the two groups' means over its standard error from the overall variance (for a 0/1 label that
is exactly the pooled two-proportion z), and the material difference is ``min_std_diff`` (default 0.25) overall
standard deviations.

Rows whose value is missing at random have the label at the base rate in both groups: |z| stays small. The 2013
NYC flights show the failure this catches: every flight without a tail number is a cancelled one (601 of 601 in
January-February against 2.3 % of the others), z = 131.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

MIN_GROUP_ROWS = 30
Z_THRESHOLD = 4.0
MIN_ABS_DIFF = 0.02
MIN_REL_DIFF = 0.5
MIN_STD_DIFF = 0.25

FAIL, PASS, NO_MISSING, TOO_FEW = "fail", "pass", "no_missing", "too_few_to_judge"


@dataclass(frozen=True)
class ColumnMissingness:
    column: str
    rows_present: int
    rows_missing: int
    rate_present: float | None  # label rate (mean) among the rows where the column has a value (None: no such row)
    rate_missing: float | None  # ... where it is missing
    z: float | None  # two-proportion z statistic, missing minus present (None: not judged)
    verdict: str  # fail | pass | no_missing | too_few_to_judge


@dataclass
class MissingnessReport:
    rows: int
    label_mean: float  # the positive rate of a 0/1 label
    min_difference: float  # the material difference for this frame: max(min_abs_diff, min_rel_diff * rate)
    regression: bool = False
    columns: list[ColumnMissingness] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [c.column for c in self.columns if c.verdict == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    def table(self) -> list[dict]:
        """One JSON-able dict per column (rates and z rounded for display)."""
        out = []
        for c in self.columns:
            row = asdict(c)
            for k in ("rate_present", "rate_missing", "z"):
                row[k] = None if row[k] is None else round(row[k], 4)
            out.append(row)
        return out

    def describe(self) -> str:
        if not self.columns:
            return "no column audited"
        if self.passed:
            judged = sum(c.verdict == PASS for c in self.columns)
            return (f"{self.rows} rows, {len(self.columns)} columns: missingness does not predict the label "
                    f"({judged} judged, {sum(c.verdict == NO_MISSING for c in self.columns)} never missing, "
                    f"{sum(c.verdict == TOO_FEW for c in self.columns)} with too few missing or present rows)")
        parts = []
        for c in self.columns:
            if c.verdict == FAIL:
                fmt = (lambda v: f"mean {v:.4g}") if self.regression else (lambda v: f"rate {v:.1%}")
                parts.append(f"{c.column}: label {fmt(c.rate_missing)} in {c.rows_missing} rows without a "
                             f"value vs {fmt(c.rate_present)} in {c.rows_present} with one (z = {c.z:.1f})")
        return "missingness predicts the label (the value is recorded after the outcome?): " + "; ".join(parts)


def audit(
    frame: pd.DataFrame,
    *,
    label: str,
    columns: Sequence[str],
    min_group_rows: int = MIN_GROUP_ROWS,
    z_threshold: float = Z_THRESHOLD,
    min_abs_diff: float = MIN_ABS_DIFF,
    min_rel_diff: float = MIN_REL_DIFF,
    regression: bool = False,
    min_std_diff: float = MIN_STD_DIFF,
) -> MissingnessReport:
    """Audit ``columns`` of ``frame`` against the 0/1 column ``label`` (numeric with ``regression``; see the
    module docstring)."""
    return MissingnessAudit(label=label, columns=columns, min_group_rows=min_group_rows, z_threshold=z_threshold,
                            min_abs_diff=min_abs_diff, min_rel_diff=min_rel_diff, regression=regression,
                            min_std_diff=min_std_diff).add(frame).report()


class MissingnessAudit:
    """:func:`audit` of a frame given in parts: per part, the rows, the label's sum and squared deviations, and per
    column the rows and label sums with and without a value; the report of the whole frame from those (the
    variance merged by Chan's formula). With one part, the numbers of the whole frame's audit exactly."""

    def __init__(self, *, label: str, columns: Sequence[str], min_group_rows: int = MIN_GROUP_ROWS,
                 z_threshold: float = Z_THRESHOLD, min_abs_diff: float = MIN_ABS_DIFF,
                 min_rel_diff: float = MIN_REL_DIFF, regression: bool = False,
                 min_std_diff: float = MIN_STD_DIFF) -> None:
        self._label, self._columns = label, list(dict.fromkeys(columns))
        self._min_group_rows, self._z_threshold = min_group_rows, z_threshold
        self._min_abs_diff, self._min_rel_diff, self._min_std_diff = min_abs_diff, min_rel_diff, min_std_diff
        self._regression = regression
        self._n, self._sum, self._m2 = 0, 0.0, 0.0
        self._missing = {c: [0, 0.0, 0.0] for c in self._columns}  # rows missing, label sum there, and where present

    def add(self, frame: pd.DataFrame) -> MissingnessAudit:
        label = self._label
        absent = [c for c in [label, *self._columns] if c not in frame.columns]
        if absent:
            raise KeyError(f"frame has no column(s) {absent}")
        y = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if self._regression and not np.isfinite(y).all():
            raise ValueError(f"label column {label!r} must be numeric and finite (found nulls or other values)")
        if not self._regression and not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"label column {label!r} must hold only 0/1 (found nulls or other values)")
        n = len(y)
        if not n:
            return self
        mean = y.mean()
        m2 = float(np.sum((y - mean) ** 2))
        total = self._n + n
        delta = float(mean) - (self._sum / self._n if self._n else 0.0)
        self._m2 += m2 + (delta * delta * self._n * n / total if self._n else 0.0)
        self._n, self._sum = total, self._sum + float(np.sum(y))
        for col in self._columns:
            missing = _missing(frame[col])
            counts = self._missing[col]
            counts[0] += int(missing.sum())
            counts[1] += float(np.sum(y[missing]))
            counts[2] += float(np.sum(y[~missing]))
        return self

    def report(self) -> MissingnessReport:
        n = self._n
        rate = self._sum / n if n else float("nan")
        variance = self._m2 / n if n else 0.0  # rate * (1 - rate) for a 0/1 label
        if self._regression:
            min_diff = self._min_std_diff * math.sqrt(variance)
        else:
            min_diff = max(self._min_abs_diff, self._min_rel_diff * rate) if n else self._min_abs_diff
        report = MissingnessReport(rows=n, label_mean=rate, min_difference=min_diff, regression=self._regression)
        for col in self._columns:
            n_miss, sum_miss, sum_pres = self._missing[col]
            n_pres = n - n_miss
            r_miss = sum_miss / n_miss if n_miss else None
            r_pres = sum_pres / n_pres if n_pres else None
            z = None
            if n_miss == 0:
                verdict = NO_MISSING
            elif min(n_miss, n_pres) < self._min_group_rows:
                verdict = TOO_FEW
            else:
                diff = r_miss - r_pres
                se = math.sqrt(variance * (1 / n_miss + 1 / n_pres))
                z = diff / se if se > 0 else 0.0
                verdict = FAIL if abs(z) >= self._z_threshold and abs(diff) >= min_diff else PASS
            report.columns.append(ColumnMissingness(col, n_pres, n_miss, r_pres, r_miss, z, verdict))
        return report


MISSING_TOKENS = frozenset({"", "unknown", "na", "n/a", "null", "none", "nan"})
"""Strings that stand for a missing value (compared stripped, case-insensitively): a pipeline that replaces a
missing key by a placeholder (``'UNKNOWN'``, so the key can still be joined) must not hide the missingness."""


def _missing(s: pd.Series) -> np.ndarray:
    missing = s.isna().to_numpy(dtype=bool)
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype)):
        # judged once per distinct value (a column holds few), then looked up
        tokens = [v for v in pd.unique(s[~missing]) if isinstance(v, str) and v.strip().lower() in MISSING_TOKENS]
        if tokens:
            missing |= s.isin(tokens).to_numpy(dtype=bool)
    return missing
