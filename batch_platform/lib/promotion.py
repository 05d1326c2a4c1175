"""The promotion lifecycle of a challenger, and the automatic rollback of a champion: decisions only.

A candidate whose gate passed against the champion becomes the ``challenger``. From then on:

1. **Shadow.** Every scored day, the challenger scores the same rows as the champion into the shadow table (never
   served). Nothing is decided until the shadow days whose labels are *final* reach ``shadow_min_days`` days and
   ``shadow_min_rows`` model-scored rows (cold-start fallback rows get the same score from both and are left out).
2. **Shadow comparison** (:func:`compare`): the spec's gate metric of both models on the same flights, the oriented
   difference (positive = challenger better) with a **paired, day-block** bootstrap interval (whole days
   resampled, widened for few days: :mod:`batch_platform.lib.gate`). The verdict:

   * ``confirmed`` -- ``difference >= 0`` and ``ci_low > -tolerance`` (the gate's own rule, now on days the
     challenger never saw, with final labels);
   * ``refuted`` -- ``ci_high < 0``: the challenger is worse with the stated confidence; it is withdrawn;
   * ``inconclusive`` -- neither: shadowing goes on, until ``shadow_max_days`` shadow days, then it is withdrawn
     (``expired``): a challenger that cannot show it is not worse within that time is not promoted.
3. **Canary** (``canary_share > 0``): after a confirmed shadow comparison the challenger serves that share of the
   keys, chosen by a stable hash of the key (:func:`canary_selected`: a flight never flips between days or
   re-scores), the champion still scoring them in the shadow table. Once ``canary_min_days`` canary days have
   final labels, the comparison is repeated on every day since the shadow began, canary days included (all keys,
   paired; two days alone would give an interval ~9 times wider than their spread); ``confirmed`` promotes,
   ``refuted`` withdraws, otherwise it waits (up to ``shadow_max_days`` canary days).
4. **Promotion** with the gate report and the evidence (the comparisons) in the alias log.

**Rollback** (:func:`rollback_step`): within ``rollback_window_days`` of a promotion, once ``rollback_min_days``
days served by the new champion have final labels, its production metric on them gets a day-block bootstrap
interval; when the interval's upper end lies below the previous champion's metric in its shadow comparison (the
metric it had on the same kind of days, measured on final labels) -- or, for a champion promoted without a shadow
(``shadow_min_days`` 0, or by hand), the previous champion's metric on the gate's test window -- or the point
estimate below the hard ``rollback_floor``, the previous champion is restored (by the caller, after verifying its
artefact and smoke-scoring it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batch_platform.lib import gate

WAITING, CONFIRMED, REFUTED, INCONCLUSIVE = "waiting", "confirmed", "refuted", "inconclusive"
# the columns compare() reads: one row per (day, key) scored by both models, with its final label
DAY, LABEL, CHAMPION_SCORE, CHALLENGER_SCORE = "day", "y", "champion_score", "challenger_score"


@dataclass(frozen=True)
class PromotionPolicy:
    """Built from a spec's ``gate:`` and ``promotion:`` sections with :meth:`from_spec`."""

    metric: str
    tolerance: float
    shadow_min_days: int = 3
    shadow_min_rows: int = 1000
    shadow_max_days: int = 14
    canary_share: float = 0.0
    canary_min_days: int = 2
    rollback_window_days: int = 7
    rollback_min_days: int = 3
    rollback_floor: float | None = None
    confidence: float = 0.95
    n_bootstrap: int = 1000
    seed: int = 0

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> PromotionPolicy:
        p = spec.promotion
        values = {"metric": spec.gate.metric, "tolerance": float(spec.gate.tolerance),
                  "shadow_min_days": p.shadow_min_days, "shadow_min_rows": p.shadow_min_rows,
                  "shadow_max_days": p.shadow_max_days, "canary_share": p.canary_share,
                  "canary_min_days": p.canary_min_days, "rollback_window_days": p.rollback_window_days,
                  "rollback_min_days": p.rollback_min_days, "rollback_floor": p.rollback_floor}
        return cls(**{**values, **overrides})


@dataclass
class Comparison:
    """Challenger vs champion on the same rows of ``days`` (oriented: positive = challenger better)."""

    verdict: str
    reason: str
    metric: str
    days: list[str]
    rows: int
    positives: int | None  # None for a regression metric
    champion_metric: float | None = None
    challenger_metric: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict:
        return gate._plain(asdict(self))


@dataclass(frozen=True)
class Step:
    """What the lifecycle does now: ``wait``, ``start_canary``, ``promote``, ``withdraw`` (clear the challenger),
    ``rollback`` or ``none``; ``evidence`` goes into the alias log with the move."""

    action: str
    reason: str
    evidence: dict = field(default_factory=dict)


def compare(rows: pd.DataFrame, policy: PromotionPolicy, *, min_days: int, min_rows: int) -> Comparison:
    """The paired, day-blocked comparison of the challenger with the champion on ``rows`` (columns ``day``, ``y``,
    ``champion_score``, ``challenger_score``: model-scored rows with final labels). ``waiting`` until ``rows``
    span ``min_days`` days and ``min_rows`` rows with both classes."""
    days = sorted({str(d) for d in rows[DAY]}) if len(rows) else []
    n, positives = len(rows), _positives(policy.metric, rows)
    base = {"metric": policy.metric, "days": days, "rows": n, "positives": positives}
    if len(days) < min_days or n < min_rows:
        return Comparison(WAITING, f"{len(days)} of {min_days} day(s) and {n} of {min_rows} rows with final "
                          "labels scored by both models", **base)
    if positives is not None and positives in (0, n):
        return Comparison(WAITING, f"the {n} rows hold a single class: nothing to compare yet", **base)
    y = rows[LABEL].to_numpy()
    champion = rows[CHAMPION_SCORE].to_numpy(dtype="float64")
    challenger = rows[CHALLENGER_SCORE].to_numpy(dtype="float64")
    blocks = rows[DAY].astype(str).to_numpy()
    diff, low, high = gate.paired_bootstrap(policy.metric, y, challenger, champion, n=policy.n_bootstrap,
                                            confidence=policy.confidence, seed=policy.seed, blocks=blocks)
    values = {"champion_metric": gate.metric_value(policy.metric, y, champion),
              "challenger_metric": gate.metric_value(policy.metric, y, challenger),
              "difference": diff, "ci_low": low, "ci_high": high}
    pct = f"{policy.confidence:.0%}"
    where = (f"{policy.metric} challenger {values['challenger_metric']:.4f} vs champion "
             f"{values['champion_metric']:.4f} on {n} rows of {len(days)} day(s), difference {diff:+.4f} "
             f"[{low:+.4f}, {high:+.4f}] ({pct}, day blocks)")
    if diff >= 0 and low > -policy.tolerance:
        return Comparison(CONFIRMED, f"{where}: not worse (lower end above -{policy.tolerance:g})", **base, **values)
    if high < 0:
        return Comparison(REFUTED, f"{where}: worse (the whole interval below 0)", **base, **values)
    return Comparison(INCONCLUSIVE, f"{where}: neither shown not worse nor worse yet", **base, **values)


def shadow_step(comparison: Comparison, policy: PromotionPolicy, shadow_days: int) -> Step:
    """The step after a shadow comparison; ``shadow_days``: days the challenger has shadow-scored so far."""
    evidence = {"phase": "shadow", "comparison": comparison.to_dict()}
    if comparison.verdict == CONFIRMED:
        if policy.canary_share > 0:
            return Step("start_canary", f"shadow comparison confirmed: {comparison.reason}; canary on "
                        f"{policy.canary_share:.0%} of keys", evidence)
        return Step("promote", f"shadow comparison confirmed: {comparison.reason}", evidence)
    if comparison.verdict == REFUTED:
        return Step("withdraw", f"shadow comparison refuted: {comparison.reason}", evidence)
    if shadow_days >= policy.shadow_max_days:
        return Step("withdraw", f"expired: {shadow_days} shadow days (shadow_max_days {policy.shadow_max_days}) "
                    f"without a confirmed comparison; last: {comparison.reason}", evidence)
    return Step("wait", f"shadow: {comparison.reason}", evidence)


def canary_step(comparison: Comparison, policy: PromotionPolicy, canary_days: int, shadow_evidence: dict | None
                ) -> Step:
    """The step after a canary-window comparison (``canary_days``: days served as canary so far)."""
    evidence = {"phase": "canary", "canary_share": policy.canary_share, "comparison": comparison.to_dict(),
                "shadow": shadow_evidence}
    if comparison.verdict == CONFIRMED:
        return Step("promote", f"canary confirmed: {comparison.reason}", evidence)
    if comparison.verdict == REFUTED:
        return Step("withdraw", f"canary refuted: {comparison.reason}", evidence)
    if canary_days >= policy.shadow_max_days:
        return Step("withdraw", f"expired: {canary_days} canary days without a confirmed comparison", evidence)
    return Step("wait", f"canary: {comparison.reason}", evidence)


def _positives(metric: str, rows: pd.DataFrame) -> int | None:
    """Positive labels among ``rows`` (a binary metric needs both classes); None for a regression metric."""
    if gate.is_regression(metric):
        return None
    return int(rows[LABEL].sum()) if len(rows) else 0


MIN_BLOCKS = 3
"""Fewest days a day-block interval is computed on: resampling two days has three outcomes (each day twice, or
both), so an "interval" of two days can sit entirely on one side of its own point estimate."""


def rollback_step(rows: pd.DataFrame, policy: PromotionPolicy, *, champion: int, previous: int,
                  previous_metric: float | None, days_since_promotion: float,
                  previous_source: str = "shadow comparison") -> Step:
    """Whether to restore ``previous`` (see the module docstring). ``rows``: columns ``day``, ``y`` and
    ``champion_score`` -- the new champion's served, model-scored rows with final labels since its promotion;
    ``previous_metric``: what ``previous`` measured on held-out flights when ``champion`` was promoted, named by
    ``previous_source`` (the shadow comparison, or the gate's test window for a promotion without a shadow)."""
    if days_since_promotion > policy.rollback_window_days:
        return Step("none", f"v{champion} was promoted {days_since_promotion:.1f} days ago, outside the rollback "
                    f"window of {policy.rollback_window_days} days")
    days = sorted({str(d) for d in rows[DAY]}) if len(rows) else []
    n, positives = len(rows), _positives(policy.metric, rows)
    if len(days) < max(MIN_BLOCKS, policy.rollback_min_days) or (positives is not None and positives in (0, n)):
        return Step("none", f"v{champion}: {len(days)} of {policy.rollback_min_days} day(s) with final labels "
                    "since its promotion")
    y, s = rows[LABEL].to_numpy(), rows[CHAMPION_SCORE].to_numpy(dtype="float64")
    value, low, high = gate.bootstrap_metric(policy.metric, y, s, n=policy.n_bootstrap,
                                             confidence=policy.confidence, seed=policy.seed,
                                             blocks=rows[DAY].astype(str).to_numpy())
    higher = gate.HIGHER_IS_BETTER[policy.metric]
    evidence = {"phase": "rollback_watch", "metric": policy.metric, "champion": champion, "previous": previous,
                "days": days, "rows": n, "positives": positives, "production_metric": value, "ci_low": low,
                "ci_high": high, "previous_metric": previous_metric,
                "previous_metric_source": previous_source if previous_metric is not None else None,
                "floor": policy.rollback_floor}
    what = (f"v{champion} production {policy.metric} {value:.4f} [{low:.4f}, {high:.4f}] on {n} rows of "
            f"{len(days)} day(s)")
    if previous_metric is not None and (high < previous_metric if higher else low > previous_metric):
        return Step("rollback", f"{what}: worse than v{previous}'s {previous_metric:.4f} (its {previous_source}) "
                    "beyond its interval", evidence)
    floor = policy.rollback_floor
    if floor is not None and (value < floor if higher else value > floor):
        return Step("rollback", f"{what}: beyond the hard floor {floor:g}", evidence)
    return Step("none", f"{what}: holds (v{previous}'s "
                f"{'n/a' if previous_metric is None else f'{previous_metric:.4f}, its {previous_source}'})",
                evidence)


def canary_selected(keys: Iterable[Any], share: float, salt: str) -> np.ndarray:
    """Whether each key is in the canary: a stable hash of ``salt`` and the key, uniform on [0, 1), below
    ``share``. The same key gets the same answer in every process, day and re-score (no Python ``hash()``)."""
    if not 0 <= share <= 1:
        raise ValueError(f"canary share must be in [0, 1], got {share}")
    if share == 0:
        return np.zeros(len(list(keys)) if not hasattr(keys, "__len__") else len(keys), dtype=bool)
    prefix = salt.encode() + b"\x00"
    unit = np.array([int.from_bytes(hashlib.blake2b(prefix + str(k).encode(), digest_size=8).digest(), "big")
                     for k in keys], dtype=np.float64) / 2.0**64
    return unit < share
