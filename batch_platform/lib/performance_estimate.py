"""Performance estimated before labels: the metric a scored day is expected to reach, from its scores alone.

Labels of a flight day are final days after it was scored; this estimates the day's ROC AUC, average precision and
log loss the moment its scores exist, in the manner of confidence-based performance estimation (CBPE): if the
*calibrated* score of a row is its probability of being positive, the day's labels are Bernoulli draws and every
metric of the raw scores has an expected value under them.

**Calibration** (:func:`fit_calibration`): an isotonic regression of the label rate on the raw score over
equal-count score bins, fitted on a labelled window the model did not train on (the candidate's validation and test
windows) and frozen with the model version as JSON (:meth:`CalibrationMap.to_json`: the bins' centres and fitted
rates, applied by linear interpolation, clipped at the ends).
Metrics are still computed on the raw scores: the map only says how likely each row is to be positive, and being
monotone it never reorders rows.

**Expected values** (:func:`estimate`), with ``p_i`` the calibrated probability of row ``i`` and rows grouped by
distinct raw score, highest first (group ``k``: ``c_k`` rows at or above it, ``s_k = Σ p_i``, ``f_k = Σ (1 - p_i)``,
``v_k = Σ p_i (1 - p_i)`` over the group, ``TP_k = Σ_{j≤k} s_j`` the expected true positives at that threshold, and
``E[FP_k] = c_k - TP_k``):

- ROC AUC = U / (P N), U the positive-negative pairs ranked right (ties: one half). Over pairs of distinct rows,
  ``E[U] = Σ_k f_k TP_{k-1} + (s_k f_k - v_k) / 2`` and ``E[P N] = (Σ p)(Σ (1 - p)) - Σ p (1 - p)``; the estimate is
  their ratio: the area under the expected ROC curve, without each row paired with itself.
- Average precision = (1/P) Σ_k G_k TP_k / c_k (``G_k`` the positives in group ``k``; precision at a threshold has a
  known denominator, ``c_k``). ``E[G_k TP_k] = s_k TP_k + v_k`` (a positive counts itself); the estimate is
  ``Σ_k (s_k TP_k + v_k) / c_k`` over ``E[P] = Σ p``.
- Log loss is linear in the labels: ``mean(-p log q - (1 - p) log(1 - q))`` with ``q`` the raw score, exactly.

The ratios are ratios of expectations, not expectations of ratios. The **Monte-Carlo** part draws label sets
``y ~ Bernoulli(p)`` (``draws`` of them, seeded) and computes each metric exactly as :mod:`sklearn.metrics` does on
every draw (draws with one class only are left out, as a day with one class has no AUC): its mean is the
expectation itself, and its spread is how far one day's realised value falls from it by chance alone — the interval
``[low, high]`` and :meth:`MetricEstimate.percentile` say whether a realised value is surprising.

What it cannot see: a change in how the label depends on the score (concept drift; the map holds the relation of
its window) or in the base rate that the scores do not follow, and outcomes that share a cause within a day. The
spread assumes independent labels; on the 2013 flights a day's realised metric scatters two to three times wider
(one day's weather delays many flights at once), so the interval is the chance spread of a day *without* such a
shock, not a prediction interval for a real day, and the estimate is the day's expected level, not its outcome.
The realised metric, when the labels arrive, is the judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CALIBRATION = "calibration"  # key of the calibration map in a model version's metrics
METRICS = ("roc_auc", "average_precision", "log_loss")
EPS = 1e-15  # scores clipped like evaluation.metrics' log loss
ROWS_PER_BIN = 200  # calibration bins: a label rate over 200 rows is within about +-0.03 at 20 %
MAX_BINS = 500
MAX_CELLS = 4_000_000  # labels drawn at a time (draws x rows) in the Monte-Carlo part


@dataclass(frozen=True)
class CalibrationMap:
    """Raw score → P(y = 1): a non-decreasing piecewise-linear map through ``(scores[i], probabilities[i])``."""

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    rows: int
    positives: int
    window: str = ""

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=float), self.scores, self.probabilities)

    def to_json(self) -> dict:
        return {"method": "isotonic", "scores": list(self.scores), "probabilities": list(self.probabilities),
                "rows": self.rows, "positives": self.positives, "window": self.window}

    @classmethod
    def from_json(cls, data: dict) -> CalibrationMap:
        if data.get("method") != "isotonic":
            raise ValueError(f"unknown calibration method {data.get('method')!r}")
        return cls(tuple(map(float, data["scores"])), tuple(map(float, data["probabilities"])), int(data["rows"]),
                   int(data["positives"]), str(data.get("window", "")))


def fit_calibration(y: np.ndarray, scores: np.ndarray, *, window: str = "", rows_per_bin: int = ROWS_PER_BIN
                    ) -> CalibrationMap:
    """Isotonic regression of the labels ``y`` on the raw ``scores`` of a labelled window (``window`` names it),
    over equal-count score bins of ``rows_per_bin`` rows (their mean score and label rate, weighted by rows): the map
    passes through each bin's centre, so no end of it rests on a handful of rows, and it has a few hundred
    breakpoints at most."""
    y = np.asarray(y).astype(float)
    scores = np.asarray(scores, dtype=float)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise ValueError("a calibration map needs labelled rows of both classes")
    order = np.argsort(scores, kind="stable")
    bins = int(np.clip(len(y) // rows_per_bin, 1, MAX_BINS))
    edges = np.linspace(0, len(y), bins + 1).astype(int)
    rows = np.diff(edges)
    centres = np.add.reduceat(scores[order], edges[:-1]) / rows
    rates = np.add.reduceat(y[order], edges[:-1]) / rows
    from sklearn.isotonic import IsotonicRegression  # (a second to import: only where an estimate is fitted)

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit_transform(centres, rates,
                                                                                     sample_weight=rows)
    if bins == 1:  # a constant map
        centres, fitted = np.r_[centres, centres], np.r_[fitted, fitted]
    return CalibrationMap(tuple(float(x) for x in centres), tuple(float(p) for p in fitted), int(len(y)),
                          int(y.sum()), window)


def calibration_of(version_metrics: dict) -> CalibrationMap | None:
    """The calibration map stored in a model version's metrics, if it has one."""
    data = (version_metrics or {}).get(CALIBRATION)
    return None if data is None else CalibrationMap.from_json(data)


@dataclass(frozen=True)
class MetricEstimate:
    metric: str
    expected: float | None  # analytic expectation (see the module docstring); None: undefined
    mc_mean: float | None  # mean over the Monte-Carlo draws with both classes
    mc_std: float | None
    low: float | None  # the draws' central interval at the estimate's level
    high: float | None
    draws: np.ndarray  # the metric of each valid draw, sorted

    def percentile(self, realised: float) -> float | None:
        """Share of the draws at or below ``realised`` (ties count half): near 0 or 1, the value is surprising."""
        if len(self.draws) == 0:
            return None
        below = np.searchsorted(self.draws, realised, side="left")
        upto = np.searchsorted(self.draws, realised, side="right")
        return float((below + upto) / 2 / len(self.draws))

    def to_json(self) -> dict:
        return {"metric": self.metric, "expected": self.expected, "mc_mean": self.mc_mean, "mc_std": self.mc_std,
                "low": self.low, "high": self.high, "draws": int(len(self.draws))}


@dataclass(frozen=True)
class PerformanceEstimate:
    rows: int
    expected_positives: float  # Σ p
    level: float  # of [low, high]
    metrics: dict[str, MetricEstimate]

    def __getitem__(self, metric: str) -> MetricEstimate:
        return self.metrics[metric]

    def to_json(self) -> dict:
        return {"rows": self.rows, "expected_positives": self.expected_positives, "level": self.level,
                "metrics": {k: v.to_json() for k, v in self.metrics.items()}}


def _groups(scores: np.ndarray, p: np.ndarray):
    """Rows sorted by raw score, highest first; per distinct score: s_k, f_k, v_k and c_k (rows at or above)."""
    order = np.argsort(-scores, kind="stable")
    s_sorted, p_sorted = scores[order], p[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]  # last row of each group
    starts = np.r_[0, ends[:-1] + 1]

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts)

    return order, ends, per_group(p_sorted), per_group(1 - p_sorted), per_group(p_sorted * (1 - p_sorted)), ends + 1


def expected_metrics(scores: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """The analytic expectations of the module docstring (``scores`` raw, ``p`` calibrated)."""
    scores, p = np.asarray(scores, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    out: dict[str, float | None] = {m: None for m in METRICS}
    if len(scores) == 0:
        return out
    _, _, s, f, v, c = _groups(scores, p)
    tp = np.cumsum(s)
    tp_before = tp - s
    pairs = p.sum() * (1 - p).sum() - (p * (1 - p)).sum()
    if pairs > 0:
        out["roc_auc"] = float((f * tp_before + (s * f - v) / 2).sum() / pairs)
    if p.sum() > 0:
        out["average_precision"] = float(((s * tp + v) / c).sum() / p.sum())
    q = np.clip(scores, EPS, 1 - EPS)
    out["log_loss"] = float(np.mean(-p * np.log(q) - (1 - p) * np.log(1 - q)))
    return out


def label_metrics(scores: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of the raw ``scores`` against each row of the label matrix ``y`` (draws x rows), as sklearn
    computes it — ties in the score as sklearn handles them: midranks for ROC AUC, one threshold per distinct score
    for average precision. Label rows with one class only are dropped."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    y = np.asarray(y, dtype=bool).reshape(-1, n)
    order, ends, _, _, _, c = _groups(scores, np.zeros(n))
    y = y[:, order]
    pos = y.sum(axis=1)
    ok = (pos > 0) & (pos < n)
    y, pos = y[ok].astype(float), pos[ok].astype(float)
    from scipy.stats import rankdata

    ranks = rankdata(scores[order])  # ascending midranks
    q = np.clip(scores[order], EPS, 1 - EPS)
    tp = np.cumsum(y, axis=1)[:, ends]
    return {
        "roc_auc": (y @ ranks - pos * (pos + 1) / 2) / (pos * (n - pos)),
        "average_precision": (np.diff(tp, axis=1, prepend=0.0) * tp / c).sum(axis=1) / pos,
        "log_loss": (y @ -np.log(q) + (1 - y) @ -np.log(1 - q)) / n,
    }


def sampled_metrics(scores: np.ndarray, p: np.ndarray, *, draws: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric on ``draws`` label sets ``y ~ Bernoulli(p)`` (:func:`label_metrics`), sorted."""
    scores, p = np.asarray(scores, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    n = len(scores)
    if n == 0 or draws <= 0:
        return {m: np.array([]) for m in METRICS}
    rng = np.random.default_rng(seed)
    found: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    per_chunk = max(1, MAX_CELLS // n)
    for start in range(0, draws, per_chunk):
        y = rng.random((min(per_chunk, draws - start), n)) < p
        for m, values in label_metrics(scores, y).items():
            found[m].append(values)
    return {m: np.sort(np.concatenate(v)) for m, v in found.items()}


def estimate(scores: np.ndarray, calibration: CalibrationMap | None = None, *, metrics=METRICS, draws: int = 1000,
             seed: int = 0, level: float = 0.9) -> PerformanceEstimate:
    """Expected ``metrics`` of one day's raw model ``scores`` (the rows the model scored, not fallback rows), with
    the Monte-Carlo mean, spread and central ``level`` interval. ``calibration`` maps the raw scores to probabilities
    (``None``: the scores are taken as calibrated)."""
    scores = np.asarray(scores, dtype=float)
    p = np.clip(calibration.apply(scores) if calibration is not None else scores, 0.0, 1.0)
    analytic = expected_metrics(scores, p)
    sampled = sampled_metrics(scores, p, draws=draws, seed=seed)
    tail = (1 - level) / 2
    out = {}
    for m in metrics:
        d = sampled[m]
        some = len(d) > 0
        out[m] = MetricEstimate(
            metric=m, expected=analytic[m], mc_mean=float(d.mean()) if some else None,
            mc_std=float(d.std(ddof=1)) if len(d) > 1 else None,
            low=float(np.quantile(d, tail)) if some else None, high=float(np.quantile(d, 1 - tail)) if some else None,
            draws=d)
    return PerformanceEstimate(rows=int(len(scores)), expected_positives=float(p.sum()), level=level, metrics=out)
