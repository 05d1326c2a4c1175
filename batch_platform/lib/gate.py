"""The promotion gate: may a candidate model replace the champion?

Both models are scored on the *same* rows (the spec's most recent test window). Every comparison is
**oriented so that a positive difference means the candidate is better**: ``candidate - reference`` for
``roc_auc`` and ``average_precision`` (higher is better), ``reference - candidate`` for ``log_loss`` (lower is
better).

Decision rule (:func:`evaluate_gate`)
-------------------------------------
The *reference* is the champion when there is one, otherwise the spec's ``floor`` (first model): a metric value,
or with ``floor_basis: positive_rate`` that multiple of the test window's positive rate (held constant across
resamples).

1. **Overall**, both must hold:

   * ``difference >= 0`` -- the point estimate (the metric on all test rows, computed with scikit-learn) of the
     candidate is at least as good as the reference. Ties pass: "not worse on the point estimate".
   * ``ci_low > -tolerance`` -- the lower end of the two-sided ``confidence`` percentile-bootstrap interval of
     the oriented difference rules out "worse by more than ``tolerance``". With a champion the bootstrap is
     *paired* (each resample draws the same rows for both models); with the floor it resamples the candidate's
     metric and subtracts the constant floor, i.e. ``ci_low(candidate) > floor - tolerance`` (for ``log_loss``:
     ``ci_high(candidate) < floor + tolerance``).

   Consequence, intended: a candidate whose scores are identical to the champion's (difference exactly 0, every
   resample 0, so ``ci_low = 0``) **passes when tolerance > 0** and fails when ``tolerance == 0``. A retrain that
   reproduces the champion is not a regression, and promoting it keeps the served model's lineage on the newest
   data; a spec that wants "strictly, significantly better" sets ``tolerance: 0``, which then demands
   ``ci_low > 0``.

2. **Slices** (champion only): for every value of every ``policy.slices`` column of ``slice_frame`` (aligned
   row-by-row with ``y_true``; missing values form their own slice, reported as ``None``), the oriented point
   difference must satisfy ``difference >= -max_slice_degradation``. A slice with fewer than
   ``min_slice_rows`` rows or with a single class is *skipped* (reported, never failing): its metric is undefined
   or too noisy to block a promotion. Slices get no confidence interval. For a first model there is no
   reference per slice, so slices are reported with the candidate's metric, ``skipped`` and not checked.

The gate passes iff every check passes; ``GateReport.reasons`` lists one sentence per failed check.

Bootstrap
---------
A resample is ``n`` row indices drawn uniformly with replacement; the same indices serve every model (that is
the pairing). Metrics are computed for a block of resamples at once with numpy, never by sorting per resample:
each model's scores are sorted once into distinct-score groups, and one ``np.bincount`` per block counts how many
positives and negatives of each group every resample drew. ROC AUC is then the exact Mann-Whitney count (a
tie counts 1/2, as scikit-learn's trapezoidal rule) and average precision the sum over distinct-score
thresholds of recall step x precision (as scikit-learn), both from cumulative sums over the groups; log loss is
the mean of per-row losses clipped as scikit-learn clips them. Each equals the scikit-learn metric on the
drawn rows (to ~1e-15; tested).
A resample that contains only one class is **discarded and redrawn** (for every metric, so all metrics use the
same resamples): the interval is conditional on both classes being present, as the test window itself is. The
draws come from ``numpy.random.default_rng(seed)`` in blocks whose size depends only on the row count, so a
given ``(y_true, seed, n_bootstrap)`` always produces the same resamples, for any metric and any scores.
The interval is the percentile interval of the resampled differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

HIGHER_IS_BETTER = {"roc_auc": True, "average_precision": True, "log_loss": False}
METRICS = tuple(HIGHER_IS_BETTER)

# Elements of one block of resamples (resamples x rows); keeps peak memory around a few hundred MB.
_BLOCK_ELEMENTS = 2_000_000
# Give up when this many resamples per requested one were degenerate (only possible with absurd inputs).
_MAX_DRAWS_PER_RESAMPLE = 100


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must achieve; built from a spec's ``gate:`` section with :meth:`from_spec`."""

    metric: str
    tolerance: float
    floor: float
    slices: tuple[str, ...] = ()
    max_slice_degradation: float = 0.05
    n_bootstrap: int = 1000
    confidence: float = 0.95
    min_slice_rows: int = 200
    seed: int = 0
    floor_basis: str = "absolute"
    """``absolute``: the floor is a metric value; ``positive_rate``: the floor is a multiple of the test window's
    positive rate (what a random ranking scores in average precision), so it follows the season's base rate."""

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if isinstance(self.slices, str):
            raise TypeError("slices is a tuple of column names, not a string")
        object.__setattr__(self, "slices", tuple(self.slices))
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if not self.max_slice_degradation >= 0:
            raise ValueError(f"max_slice_degradation must be >= 0, got {self.max_slice_degradation}")
        if not math.isfinite(self.floor):
            raise ValueError(f"floor must be finite, got {self.floor}")
        if self.floor_basis not in ("absolute", "positive_rate"):
            raise ValueError(f"floor_basis must be 'absolute' or 'positive_rate', got {self.floor_basis!r}")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.min_slice_rows < 1:
            raise ValueError(f"min_slice_rows must be >= 1, got {self.min_slice_rows}")

    @classmethod
    def from_spec(cls, gate: Any, **overrides: Any) -> GatePolicy:
        """From a :class:`batch_platform.lib.specs.GateSpec` (or anything with its attributes); ``overrides``
        set the knobs the spec does not hold (``n_bootstrap``, ``confidence``, ``min_slice_rows``, ``seed``)."""
        values = {"metric": gate.metric, "tolerance": float(gate.tolerance), "floor": float(gate.floor),
                  "slices": tuple(gate.slices), "max_slice_degradation": float(gate.max_slice_degradation),
                  "floor_basis": getattr(gate, "floor_basis", "absolute")}
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["slices"] = list(self.slices)
        return d


@dataclass
class GateReport:
    """The gate's verdict and the evidence for it. ``difference``, ``ci_low`` and ``ci_high`` are oriented
    (positive = candidate better) and measured against ``baseline``: the champion, or the floor for a first
    model (then ``champion_metric`` is ``None``)."""

    passed: bool
    policy: dict
    metric: str
    n_rows: int
    candidate_metric: float
    champion_metric: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    slices: list[dict]
    reasons: list[str]
    candidate_version: int | None = None
    champion_version: int | None = None
    baseline: str = "champion"  # "champion" | "floor"

    def to_dict(self) -> dict:
        return _plain(asdict(self))


# -- metrics -----------------------------------------------------------------------------------------------


def metric_value(metric: str, y_true: Any, scores: Any) -> float:
    """The metric on all rows, computed by scikit-learn (raw value, not oriented)."""
    _check_metric(metric)
    y, s = _as_binary(y_true), _as_scores(scores, metric, len(np.asarray(y_true)))
    if metric == "roc_auc":
        return float(roc_auc_score(y, s))
    if metric == "average_precision":
        return float(average_precision_score(y, s))
    return float(log_loss(y, s, labels=[0, 1]))


def paired_bootstrap(metric: str, y_true: Any, a: Any, b: Any, n: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Paired percentile bootstrap of the oriented difference "``a`` better than ``b``".

    Returns ``(difference, low, high)``: the point difference on all rows (scikit-learn) and the two-sided
    ``confidence`` interval from ``n`` resamples that draw the same rows for both models. Positive means ``a``
    is better (``a - b`` for roc_auc/average_precision, ``b - a`` for log_loss)."""
    _check_metric(metric)
    y = _as_binary(y_true)
    sa, sb = _as_scores(a, metric, len(y)), _as_scores(b, metric, len(y))
    sign = _sign(metric)
    diff = sign * (metric_value(metric, y, sa) - metric_value(metric, y, sb))
    values = _bootstrap_values(metric, y, [sa, sb], n, seed)
    low, high = _percentiles(sign * (values[:, 0] - values[:, 1]), confidence)
    return diff, low, high


def bootstrap_metric(metric: str, y_true: Any, scores: Any, n: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap of one model's metric (raw, not oriented): ``(value, low, high)``."""
    _check_metric(metric)
    y = _as_binary(y_true)
    s = _as_scores(scores, metric, len(y))
    values = _bootstrap_values(metric, y, [s], n, seed)
    low, high = _percentiles(values[:, 0], confidence)
    return metric_value(metric, y, s), low, high


# -- the gate ----------------------------------------------------------------------------------------------


def evaluate_gate(y_true: Any, candidate_scores: Any, champion_scores: Any | None, policy: GatePolicy,
                  slice_frame: pd.DataFrame | None = None) -> GateReport:
    """Apply ``policy`` (see the module docstring for the exact rule). ``champion_scores=None`` means there is
    no champion yet. ``slice_frame`` holds the ``policy.slices`` columns, row-aligned with ``y_true``.

    Raises ``ValueError`` for unusable input: lengths differ, scores not finite (or not probabilities for
    log_loss), ``y_true`` not binary or with a single class, a guarded slice column missing."""
    y = _as_binary(y_true)
    n = len(y)
    if y.min() == y.max():
        raise ValueError(f"y_true has a single class ({int(y[0])}) on all {n} rows: the gate cannot compare models")
    cand = _as_scores(candidate_scores, policy.metric, n, "candidate_scores")
    champ = None if champion_scores is None else _as_scores(champion_scores, policy.metric, n, "champion_scores")
    frame = _slice_frame(slice_frame, policy.slices, n)

    metric, sign = policy.metric, _sign(policy.metric)
    pct = f"{policy.confidence:.0%}"
    cand_value = metric_value(metric, y, cand)
    scores = [cand] if champ is None else [cand, champ]
    boot = _bootstrap_values(metric, y, scores, policy.n_bootstrap, policy.seed)
    reasons: list[str] = []

    champ_value = None if champ is None else metric_value(metric, y, champ)
    baseline = "floor" if champ_value is None else "champion"
    floor = policy.floor * float(y.mean()) if policy.floor_basis == "positive_rate" else policy.floor
    reference = floor if champ_value is None else champ_value
    boot_reference: float | np.ndarray = floor if champ is None else boot[:, 1]
    floor_name = (f"the floor {policy.floor:g} × positive rate {y.mean():.4f} = {floor:.4f}"
                  if policy.floor_basis == "positive_rate" else f"the floor {floor:.4f}")
    ref_name = floor_name if champ_value is None else f"the champion's {champ_value:.4f}"
    difference = sign * (cand_value - reference)
    ci_low, ci_high = _percentiles(sign * (boot[:, 0] - boot_reference), policy.confidence)

    if not difference >= 0:
        reasons.append(f"{metric}: candidate {cand_value:.4f} is worse than {ref_name} "
                       f"(oriented difference {difference:+.4f} < 0)")
    if not ci_low > -policy.tolerance:
        reasons.append(f"{metric}: the {pct} bootstrap interval of the oriented difference vs {baseline} "
                       f"[{ci_low:+.4f}, {ci_high:+.4f}] does not exclude a degradation larger than the "
                       f"tolerance {policy.tolerance:.4f} (ci_low must be > {-policy.tolerance:+.4f})")

    slices = _evaluate_slices(metric, y, cand, champ, frame, policy)
    for s in slices:
        if s["passed"] is False:
            reasons.append(f"slice {s['column']}={s['value']} (n={s['n']}): {metric} {s['candidate']:.4f} vs "
                           f"champion {s['champion']:.4f}, oriented difference {s['difference']:+.4f} < "
                           f"-{policy.max_slice_degradation:.4f} (max_slice_degradation)")

    return GateReport(passed=not reasons, policy=policy.to_dict(), metric=metric, n_rows=n,
                      candidate_metric=cand_value, champion_metric=champ_value, difference=float(difference),
                      ci_low=ci_low, ci_high=ci_high, slices=slices, reasons=reasons, baseline=baseline)


def _evaluate_slices(metric: str, y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None,
                     frame: pd.DataFrame | None, policy: GatePolicy) -> list[dict]:
    if frame is None:
        return []
    sign = _sign(metric)
    out: list[dict] = []
    for column in policy.slices:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        order = sorted(range(len(uniques)), key=lambda i: (_is_missing(uniques[i]), str(uniques[i])))
        for code in order:
            mask = codes == code
            ys = y[mask]
            n, n_pos = int(mask.sum()), int(ys.sum())
            row: dict[str, Any] = {"column": column, "value": _plain_value(uniques[code]), "n": n,
                                   "n_positive": n_pos, "candidate": None, "champion": None, "difference": None,
                                   "passed": None, "skipped": True, "reason": ""}
            if n < policy.min_slice_rows:
                row["reason"] = f"skipped: {n} rows < min_slice_rows {policy.min_slice_rows}"
            elif n_pos in (0, n):
                row["reason"] = f"skipped: a single class ({'all positive' if n_pos else 'no positive'} rows)"
            else:
                row["candidate"] = metric_value(metric, ys, cand[mask])
                if champ is None:
                    row["reason"] = "skipped: no champion to compare with (first model); reported for information"
                else:
                    row["champion"] = metric_value(metric, ys, champ[mask])
                    row["difference"] = sign * (row["candidate"] - row["champion"])
                    row["skipped"] = False
                    row["passed"] = bool(row["difference"] >= -policy.max_slice_degradation)
                    row["reason"] = ("" if row["passed"] else
                                     f"degrades by more than max_slice_degradation {policy.max_slice_degradation}")
            out.append(row)
    return out


# -- vectorised bootstrap ----------------------------------------------------------------------------------


def _bootstrap_values(metric: str, y: np.ndarray, scores: Sequence[np.ndarray], n_resamples: int,
                      seed: int) -> np.ndarray:
    """Metric of every model on ``n_resamples`` non-degenerate resamples: shape (n_resamples, len(scores))."""
    if n_resamples < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_resamples}")
    n = len(y)
    if y.min() == y.max():
        raise ValueError("y_true has a single class: no resample can contain both")
    prepared = [_prepare(metric, y, s) for s in scores]
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // n))
    out = np.empty((n_resamples, len(scores)))
    filled = drawn = 0
    while filled < n_resamples:
        if drawn >= _MAX_DRAWS_PER_RESAMPLE * n_resamples:
            raise RuntimeError(f"{drawn} resamples drawn, fewer than {n_resamples} with both classes")
        idx = rng.integers(0, n, size=(block, n))
        drawn += block
        n_pos = y[idx].sum(axis=1)
        idx = idx[(n_pos > 0) & (n_pos < n)][: n_resamples - filled]  # n_pos == n: no negative drawn
        if len(idx):
            for j, p in enumerate(prepared):
                out[filled:filled + len(idx), j] = _resampled_metric(metric, p, idx)
            filled += len(idx)
    return out


def _prepare(metric: str, y: np.ndarray, s: np.ndarray) -> dict:
    """Per-model work shared by all resamples: per-row losses, or each row's bin ``2 * group + label`` where
    ``group`` numbers the distinct scores from the highest (0) down."""
    if metric == "log_loss":
        eps = np.finfo(np.float64).eps
        p1, p0 = np.clip(s, eps, 1 - eps), np.clip(1 - s, eps, 1 - eps)  # clipped as scikit-learn does
        return {"loss": -np.where(y == 1, np.log(p1), np.log(p0))}
    distinct, group = np.unique(-s, return_inverse=True)
    return {"bin": 2 * group.astype(np.int64) + y, "groups": len(distinct)}


def _resampled_metric(metric: str, p: dict, idx: np.ndarray) -> np.ndarray:
    """The metric on each resample (a row of row indices ``idx``), one value per resample."""
    if metric == "log_loss":
        return p["loss"][idx].mean(axis=1)
    # counts[r, g, label]: how many rows of score group g (descending score) and that label resample r drew
    block, width = len(idx), 2 * p["groups"]
    keys = p["bin"][idx] + (np.arange(block, dtype=np.int64) * width)[:, None]
    counts = np.bincount(keys.ravel(), minlength=block * width).reshape(block, p["groups"], 2)
    neg, pos = counts[:, :, 0], counts[:, :, 1]
    fp = np.cumsum(neg, axis=1)  # negatives scored at or above each group
    total_neg = fp[:, -1]
    if metric == "roc_auc":
        # exact integer Mann-Whitney count: a positive beats each lower-scored negative, half of each tied one
        twice_beaten = 2 * (total_neg[:, None] - fp) + neg
        total_pos = pos.sum(axis=1)
        return np.einsum("ij,ij->i", pos, twice_beaten) / (2.0 * total_pos * total_neg)
    # average precision: sum over thresholds (distinct scores) of recall step x precision at the threshold
    tp = np.cumsum(pos, axis=1)
    precision = tp / np.maximum(tp + fp, 1)  # tp + fp == 0 only where tp == 0 (and pos == 0)
    return np.einsum("ij,ij->i", pos, precision) / tp[:, -1]


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


# -- input handling ----------------------------------------------------------------------------------------


def _check_metric(metric: str) -> None:
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def _sign(metric: str) -> float:
    return 1.0 if HIGHER_IS_BETTER[metric] else -1.0


def _as_binary(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0/1 (or booleans)")
    return y.astype(np.int64)


def _as_scores(scores: Any, metric: str, n: int, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name}: {int((~np.isfinite(s)).sum())} non-finite score(s)")
    if metric == "log_loss" and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"{name}: log_loss needs probabilities in [0, 1], got [{s.min()}, {s.max()}]")
    return s


def _slice_frame(frame: pd.DataFrame | None, columns: tuple[str, ...], n: int) -> pd.DataFrame | None:
    if not columns:
        return None
    if frame is None:
        raise ValueError(f"the policy guards slices {list(columns)} but no slice_frame was given")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"slice_frame lacks the guarded slice column(s) {missing}")
    if len(frame) != n:
        raise ValueError(f"slice_frame has {len(frame)} rows, y_true has {n}")
    return frame.reset_index(drop=True)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain_value(value: Any) -> Any:
    """A slice value as a JSON scalar: None for missing, Python int/float/bool/str, else its string."""
    if _is_missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
