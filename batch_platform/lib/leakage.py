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
    cols = sorted(c for c in df.columns if c.endswith(VALID_FROM_SUFFIX))
    report = LeakageReport(rows_checked=len(df), valid_from_columns=cols)
    cutoff = pd.to_datetime(df[EVENT_TIMESTAMP], utc=True)
    for col in cols:
        valid_from = pd.to_datetime(df[col], utc=True)
        bad = valid_from.notna() & (valid_from > cutoff)
        if bad.any():
            report.feature_violations[col] = int(bad.sum())
            for i in df.index[bad][:3]:
                report.examples.append(f"{df.at[i, key]}: {col}={valid_from[i]} > cutoff {cutoff[i]}")
    final = pd.to_datetime(df[LABEL_FINAL_AT], utc=True)
    late = final > pd.Timestamp(training_cutoff).tz_convert("UTC")
    report.label_violations = int(late.sum())
    for i in df.index[late][:3]:
        report.examples.append(f"{df.at[i, key]}: label final at {final[i]} > training cutoff {training_cutoff}")
    return report
