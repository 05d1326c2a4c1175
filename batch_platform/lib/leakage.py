"""Leakage checks for training sets: every feature must have been valid at its row's prediction cutoff, and
every label final at the training cutoff."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from batch_platform.lib.training_set import EVENT_TIMESTAMP, LABEL_FINAL_AT, VALID_FROM_SUFFIX


@dataclass
class LeakageReport:
    rows_checked: int
    valid_from_columns: list[str]
    feature_violations: dict[str, int] = field(default_factory=dict)
    label_violations: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.valid_from_columns) and not self.feature_violations and not self.label_violations

    def describe(self) -> str:
        if not self.valid_from_columns:
            return f"no '*{VALID_FROM_SUFFIX}' columns: cannot prove features were valid at the cutoff"
        if self.passed:
            return (f"{self.rows_checked} rows: all {len(self.valid_from_columns)} feature groups valid at the "
                    "prediction cutoff; all labels final at the training cutoff")
        parts = [f"{col}: {n} row(s) use a feature valid only after the cutoff"
                 for col, n in self.feature_violations.items()]
        if self.label_violations:
            parts.append(f"{self.label_violations} row(s) have a label not yet final at the training cutoff")
        return "; ".join(parts)


def check_training_set(df: pd.DataFrame, training_cutoff: dt.datetime, *, key: str) -> LeakageReport:
    return LeakageCheck(training_cutoff, key=key).add(df).report()


class LeakageCheck:
    """:func:`check_training_set` of a frame given in parts, in row order: the report of the whole frame."""

    EXAMPLES = 3  # per feature group, and for labels

    def __init__(self, training_cutoff: dt.datetime, *, key: str) -> None:
        self._cutoff, self._key = pd.Timestamp(training_cutoff).tz_convert("UTC"), key
        self._training_cutoff = training_cutoff
        self._rows = 0
        self._columns: list[str] | None = None
        self._violations: dict[str, int] = {}
        self._examples: dict[str, list[str]] = {}
        self._late = 0
        self._late_examples: list[str] = []

    def add(self, df: pd.DataFrame) -> LeakageCheck:
        cols = sorted(c for c in df.columns if c.endswith(VALID_FROM_SUFFIX))
        if self._columns is None:
            self._columns = cols
        elif cols != self._columns:
            raise ValueError(f"a part with other valid-from columns: {cols} after {self._columns}")
        self._rows += len(df)
        cutoff = pd.to_datetime(df[EVENT_TIMESTAMP], utc=True)
        for col in cols:
            valid_from = pd.to_datetime(df[col], utc=True)
            bad = valid_from.notna() & (valid_from > cutoff)
            if bad.any():
                self._violations[col] = self._violations.get(col, 0) + int(bad.sum())
                examples = self._examples.setdefault(col, [])
                for i in df.index[bad][:self.EXAMPLES - len(examples)]:
                    examples.append(f"{df.at[i, self._key]}: {col}={valid_from[i]} > cutoff {cutoff[i]}")
        final = pd.to_datetime(df[LABEL_FINAL_AT], utc=True)
        late = final > self._cutoff
        self._late += int(late.sum())
        for i in df.index[late][:self.EXAMPLES - len(self._late_examples)]:
            self._late_examples.append(f"{df.at[i, self._key]}: label final at {final[i]} > training cutoff "
                                       f"{self._training_cutoff}")
        return self

    def report(self) -> LeakageReport:
        cols = self._columns or []
        return LeakageReport(
            rows_checked=self._rows, valid_from_columns=cols,
            feature_violations={c: self._violations[c] for c in cols if c in self._violations},
            label_violations=self._late,
            examples=[e for c in cols for e in self._examples.get(c, [])] + self._late_examples)
