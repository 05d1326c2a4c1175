"""The promotion gate: may a candidate model replace the champion?

Both models are scored on the *same* rows (the spec's most recent test window). Every comparison is
**oriented so that a positive difference means the candidate is better**: ``candidate - reference`` for
``roc_auc`` and ``average_precision`` (higher is better), ``reference - candidate`` for ``log_loss`` and the
regression metrics ``rmse`` and ``mae`` (lower is better: errors, in the label's unit for regression).

Decision rule (:func:`evaluate_gate`)
-------------------------------------
The *reference* is the champion when there is one, otherwise the spec's ``floor`` (first model): a metric value,
with ``floor_basis: positive_rate`` that multiple of the test window's positive rate, or with ``floor_basis:
baseline`` that multiple of what a model without signal scores on the test window (:func:`chance_level`: for
regression the error of predicting the window's mean, for RMSE, or median, for MAE; ``floor: 0.9`` asks for 10 %
less error than that). Either is held constant across resamples. For lower-is-better metrics the floor is a
ceiling.

1. **Overall**, both must hold:

   * ``difference >= 0`` -- the point estimate (the metric on all test rows, computed with scikit-learn) of the
     candidate is at least as good as the reference. Ties pass: "not worse on the point estimate".
   * with a champion, ``ci_low > -tolerance`` -- the lower end of the two-sided ``confidence`` bootstrap interval
     of the oriented difference rules out "worse by more than ``tolerance``". The bootstrap is *paired* (each
     resample draws the same rows, or days, for both models).
   * a **first model** (the floor) is judged on the point estimate alone: there is no champion to keep, and on a
     7-day test window a day-block interval of a weak but real model routinely reaches below chance (a January
     cancellation model: AP 0.036 vs a 0.021 positive rate, interval 0.008 .. 0.094). Its interval is reported,
     and ``notes`` says so when it does not exclude chance (ROC AUC 0.5, AP the positive rate, log loss the base
     rate's); production monitoring and the rollback judge it from there.

   Consequence, intended: a candidate whose scores are identical to the champion's (difference exactly 0, every
   resample 0, so ``ci_low = 0``) **passes when tolerance > 0** and fails when ``tolerance == 0``. A retrain that
   reproduces the champion is not a regression, and promoting it keeps the served model's lineage on the newest
   data; a spec that wants "strictly, significantly better" sets ``tolerance: 0``, which then demands
   ``ci_low > 0``.

2. **Slices** (champion only): for every value of every ``policy.slices`` column of ``slice_frame`` (aligned
   row-by-row with ``y_true``; missing values form their own slice, reported as ``None``) the paired oriented
   difference gets a bootstrap interval (the same resamples as the overall one) and a one-sided bootstrap p-value
   for "this slice degrades by more than ``max_slice_degradation``" (the share of resampled differences at or
   above ``-max_slice_degradation``). A slice **fails** when Holm's step-down procedure rejects at
   ``1 - confidence`` across all judged slices: the chance that a candidate no worse than the champion on every
   slice is failed for some slice stays at or below 5 % however many slices are guarded (a point-estimate rule
   over 19 slices fails such a candidate almost always; ``tests/test_gate.py``). A slice is *skipped*
   (reported, never failing) with fewer than ``min_slice_rows`` rows, a single class, or -- for the rank metrics --
   fewer than ``min_slice_positives`` positives: a rank metric on five positives decides at random. For a first
   model there is no reference per slice, so slices are reported with the candidate's metric, ``skipped`` and not
   checked. When ``n_bootstrap`` is too small for any p-value to reach Holm's first threshold, ``notes`` says so.

The gate passes iff every check passes; ``GateReport.reasons`` lists one sentence per failed check.

Bootstrap
---------
**Day blocks** (``blocks=``, what the platform passes: the flight day of each test row). Flight days carry shocks
-- a storm, a ground stop -- that move every row of the day together, so a test window of 7 days holds 7
independent units, not 7,000: a resample draws 7 days with replacement and takes all their rows. Each model's
rows are summarised once per day (counts per distinct score and label, or loss sums) and a resample's counts are
one matrix product of day multiplicities with that table. With few blocks the percentile interval is widened
about the point estimate by ``sqrt(B / (B - 1)) * t(B - 1) / z`` (the sample-variance bias and Student's t for
B - 1 degrees of freedom; x1.35 for 7 days at 95 %). On synthetic days with day-level shocks the 95 % day-block
interval covers the true difference in >= 90 % of seeds where the row bootstrap covers ~70 %
(``tests/test_gate.py``).

**Rows** (``blocks=None``): a resample is ``n`` row indices drawn uniformly with replacement; the same indices
serve every model (that is the pairing). Metrics are computed for a block of resamples at once with numpy, never by
sorting per resample:
each model's scores are sorted once into distinct-score groups, and one ``np.bincount`` per block counts how many
positives and negatives of each group every resample drew. ROC AUC is then the exact Mann-Whitney count (a
tie counts 1/2, as scikit-learn's trapezoidal rule) and average precision the sum over distinct-score
thresholds of recall step x precision (as scikit-learn), both from cumulative sums over the groups; log loss is
the mean of per-row losses clipped as scikit-learn clips them. Each equals the scikit-learn metric on the
drawn rows (to ~1e-12; tested, for day blocks too).
Regression metrics are per-row losses too (squared or absolute errors; RMSE is the square root of their
mean), so their resamples cost what log loss's do. A resample that contains only one class is **discarded and
redrawn** (binary metrics only) (for every metric, so all metrics use the
same resamples): the interval is conditional on both classes being present, as the test window itself is. The
draws come from ``numpy.random.default_rng(seed)``, so a given ``(y_true, blocks, seed, n_bootstrap)`` always
produces the same resamples, for any metric and any scores.
The interval is the percentile interval of the resampled differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

HIGHER_IS_BETTER = {"roc_auc": True, "average_precision": True, "log_loss": False, "rmse": False, "mae": False}
METRICS = tuple(HIGHER_IS_BETTER)
REGRESSION_METRICS = ("rmse", "mae")
BINARY_METRICS = tuple(m for m in METRICS if m not in REGRESSION_METRICS)
RANK_METRICS = ("roc_auc", "average_precision")
LOSS_METRICS = ("log_loss", *REGRESSION_METRICS)  # a mean of per-row losses (RMSE: its square root)
FLOOR_BASES = ("absolute", "positive_rate", "baseline")

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
    min_slice_positives: int = 20
    """Rank metrics (roc_auc, average_precision): a slice with fewer positives is reported, not judged."""
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
        if self.floor_basis not in FLOOR_BASES:
            raise ValueError(f"floor_basis must be one of {', '.join(FLOOR_BASES)}, got {self.floor_basis!r}")
        if self.floor_basis == "positive_rate" and self.metric in REGRESSION_METRICS:
            raise ValueError(f"floor_basis 'positive_rate' has no meaning for {self.metric} (a regression metric): "
                             "use 'absolute' or 'baseline'")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.min_slice_rows < 1:
            raise ValueError(f"min_slice_rows must be >= 1, got {self.min_slice_rows}")
        if self.min_slice_positives < 1:
            raise ValueError(f"min_slice_positives must be >= 1, got {self.min_slice_positives}")

    @classmethod
    def from_spec(cls, gate: Any, **overrides: Any) -> GatePolicy:
        """From a :class:`batch_platform.lib.specs.GateSpec` (or anything with its attributes); ``overrides``
        set the knobs the spec does not hold (``n_bootstrap``, ``confidence``, ``min_slice_rows``, ``seed``)."""
        values = {"metric": gate.metric, "tolerance": float(gate.tolerance), "floor": float(gate.floor),
                  "slices": tuple(gate.slices), "max_slice_degradation": float(gate.max_slice_degradation),
                  "floor_basis": getattr(gate, "floor_basis", "absolute"),
                  "min_slice_positives": int(getattr(gate, "min_slice_positives", 20))}
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
    resampling: str = "rows"  # "rows" | "day_blocks"
    n_blocks: int | None = None
    notes: list[str] = field(default_factory=list)  # limits of this verdict worth knowing (never failing)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


# -- metrics -----------------------------------------------------------------------------------------------


def is_regression(metric: str) -> bool:
    _check_metric(metric)
    return metric in REGRESSION_METRICS


def metric_value(metric: str, y_true: Any, scores: Any) -> float:
    """The metric on all rows, computed by scikit-learn (raw value, not oriented)."""
    from sklearn.metrics import (average_precision_score, log_loss, mean_absolute_error, mean_squared_error,
                                 roc_auc_score)

    _check_metric(metric)
    y, s = _as_labels(y_true, metric), _as_scores(scores, metric, len(np.asarray(y_true)))
    if metric == "rmse":
        return float(math.sqrt(mean_squared_error(y, s)))
    if metric == "mae":
        return float(mean_absolute_error(y, s))
    if metric == "roc_auc":
        return float(roc_auc_score(y, s))
    if metric == "average_precision":
        return float(average_precision_score(y, s))
    return float(log_loss(y, s, labels=[0, 1]))


def paired_bootstrap(metric: str, y_true: Any, a: Any, b: Any, n: int = 1000, confidence: float = 0.95,
                     seed: int = 0, blocks: Any | None = None) -> tuple[float, float, float]:
    """Paired percentile bootstrap of the oriented difference "``a`` better than ``b``".

    Returns ``(difference, low, high)``: the point difference on all rows (scikit-learn) and the two-sided
    ``confidence`` interval from ``n`` resamples that draw the same rows for both models. Positive means ``a``
    is better (``a - b`` for roc_auc/average_precision, ``b - a`` for the losses). ``blocks`` (one label per row,
    e.g. the day): resample whole blocks instead of rows (see the module docstring)."""
    _check_metric(metric)
    y = _as_labels(y_true, metric)
    sa, sb = _as_scores(a, metric, len(y)), _as_scores(b, metric, len(y))
    sign = _sign(metric)
    diff = sign * (metric_value(metric, y, sa) - metric_value(metric, y, sb))
    block_labels = _as_blocks(blocks, len(y))
    values, _ = _bootstrap_values(metric, y, [sa, sb], n, seed, block_labels)
    low, high = _interval(sign * (values[:, 0] - values[:, 1]), diff, confidence, _inflation(block_labels, confidence))
    return diff, low, high


def bootstrap_metric(metric: str, y_true: Any, scores: Any, n: int = 1000, confidence: float = 0.95,
                     seed: int = 0, blocks: Any | None = None) -> tuple[float, float, float]:
    """Percentile bootstrap of one model's metric (raw, not oriented): ``(value, low, high)``; ``blocks`` as in
    :func:`paired_bootstrap`."""
    _check_metric(metric)
    y = _as_labels(y_true, metric)
    s = _as_scores(scores, metric, len(y))
    block_labels = _as_blocks(blocks, len(y))
    values, _ = _bootstrap_values(metric, y, [s], n, seed, block_labels)
    value = metric_value(metric, y, s)
    low, high = _interval(values[:, 0], value, confidence, _inflation(block_labels, confidence))
    # widening for few blocks can reach past what the metric can be (an AUC below 0): clip to its range
    top = np.inf if metric in LOSS_METRICS else 1.0
    return value, float(np.clip(low, 0.0, top)), float(np.clip(high, 0.0, top))


# -- the gate ----------------------------------------------------------------------------------------------


def evaluate_gate(y_true: Any, candidate_scores: Any, champion_scores: Any | None, policy: GatePolicy,
                  slice_frame: pd.DataFrame | None = None, blocks: Any | None = None) -> GateReport:
    """Apply ``policy`` (see the module docstring for the exact rule). ``champion_scores=None`` means there is
    no champion yet. ``slice_frame`` holds the ``policy.slices`` columns, row-aligned with ``y_true``. ``blocks``
    (one label per row: the flight day) makes the bootstrap resample whole days, as it should on data whose
    errors are correlated within a day; ``None`` resamples rows.

    Raises ``ValueError`` for unusable input: lengths differ, scores not finite (or not probabilities for
    log_loss), ``y_true`` not binary or with a single class (binary metrics) or not finite (regression), a guarded
    slice column missing."""
    y = _as_labels(y_true, policy.metric)
    n = len(y)
    if not is_regression(policy.metric) and y.min() == y.max():
        raise ValueError(f"y_true has a single class ({int(y[0])}) on all {n} rows: the gate cannot compare models")
    cand = _as_scores(candidate_scores, policy.metric, n, "candidate_scores")
    champ = None if champion_scores is None else _as_scores(champion_scores, policy.metric, n, "champion_scores")
    frame = _slice_frame(slice_frame, policy.slices, n)
    block_labels = _as_blocks(blocks, n)
    inflate = _inflation(block_labels, policy.confidence)

    metric, sign = policy.metric, _sign(policy.metric)
    pct = f"{policy.confidence:.0%}"
    cand_value = metric_value(metric, y, cand)
    scores = [cand] if champ is None else [cand, champ]
    judged = _judged_slices(metric, y, frame, policy) if champ is not None else []
    boot, slice_boot = _bootstrap_values(metric, y, scores, policy.n_bootstrap, policy.seed, block_labels,
                                         [mask for _, mask in judged])
    reasons: list[str] = []

    champ_value = None if champ is None else metric_value(metric, y, champ)
    baseline = "floor" if champ_value is None else "champion"
    floor = policy.floor * {"absolute": 1.0, "positive_rate": float(y.mean()),
                            "baseline": chance_level(metric, y)}[policy.floor_basis]
    reference = floor if champ_value is None else champ_value
    boot_reference: float | np.ndarray = floor if champ is None else boot[:, 1]
    floor_name = {"positive_rate": f"the floor {policy.floor:g} × positive rate {y.mean():.4f} = {floor:.4f}",
                  "baseline": f"the floor {policy.floor:g} × the no-signal baseline's {metric} "
                              f"{chance_level(metric, y):.4f} = {floor:.4f}"}.get(policy.floor_basis,
                                                                                 f"the floor {floor:.4f}")
    ref_name = floor_name if champ_value is None else f"the champion's {champ_value:.4f}"
    difference = sign * (cand_value - reference)
    ci_low, ci_high = _interval(sign * (boot[:, 0] - boot_reference), difference, policy.confidence, inflate)

    if not difference >= 0:
        reasons.append(f"{metric}: candidate {cand_value:.4f} is worse than {ref_name} "
                       f"(oriented difference {difference:+.4f} < 0)")
    unit = f"{len(np.unique(block_labels))}-day block" if block_labels is not None else "row"
    first_model_notes = []
    if champ is None:
        # A first model has nothing to fall back on: the floor is judged on the point estimate, and the interval
        # is reported -- with a note when it does not even exclude a ranking no better than chance.
        chance = chance_level(metric, y)
        cand_low, cand_high = _interval(boot[:, 0], cand_value, policy.confidence, inflate)
        if not (cand_low > chance if sign > 0 else cand_high < chance):
            first_model_notes.append(
                f"first model: its {pct} {unit} interval of {metric} [{cand_low:.4f}, {cand_high:.4f}] does not "
                f"exclude chance ({chance:.4f}): its advantage over a random ranking is not established on "
                f"{n} test rows; production monitoring judges it")
    elif not ci_low > -policy.tolerance:
        reasons.append(f"{metric}: the {pct} {unit} bootstrap interval of the oriented difference vs {baseline} "
                       f"[{ci_low:+.4f}, {ci_high:+.4f}] does not exclude a degradation larger than the "
                       f"tolerance {policy.tolerance:.4f} (ci_low must be > {-policy.tolerance:+.4f})")

    slices = _evaluate_slices(metric, y, cand, champ, frame, policy, judged, slice_boot, inflate)
    notes = first_model_notes
    alpha = 1 - policy.confidence
    if judged and 1 / (policy.n_bootstrap + 1) > alpha / len(judged):
        notes.append(f"n_bootstrap {policy.n_bootstrap} cannot give a p-value below {alpha:g} / {len(judged)} "
                     f"(Holm's first threshold): no slice can fail; use n_bootstrap >= {math.ceil(len(judged) / alpha)}")
    for s in slices:
        if s["passed"] is False:
            reasons.append(f"slice {s['column']}={s['value']} (n={s['n']}): {metric} {s['candidate']:.4f} vs "
                           f"champion {s['champion']:.4f}, oriented difference {s['difference']:+.4f} "
                           f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]: degrades by more than "
                           f"{policy.max_slice_degradation:.4f} (p = {s['p_value']:.4f} <= Holm threshold "
                           f"{s['holm_threshold']:.4f})")

    return GateReport(passed=not reasons, policy=policy.to_dict(), metric=metric, n_rows=n,
                      candidate_metric=cand_value, champion_metric=champ_value, difference=float(difference),
                      ci_low=ci_low, ci_high=ci_high, slices=slices, reasons=reasons, baseline=baseline,
                      resampling="rows" if block_labels is None else "day_blocks",
                      n_blocks=None if block_labels is None else int(len(np.unique(block_labels))), notes=notes)


def _slice_rows(frame: pd.DataFrame | None, policy: GatePolicy) -> list[tuple[str, Any, np.ndarray]]:
    """Every (column, value, row mask) of the guarded slices, values sorted (missing last)."""
    if frame is None:
        return []
    out = []
    for column in policy.slices:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        order = sorted(range(len(uniques)), key=lambda i: (_is_missing(uniques[i]), str(uniques[i])))
        out += [(column, _plain_value(uniques[code]), codes == code) for code in order]
    return out


def _skip_reason(metric: str, y: np.ndarray, mask: np.ndarray, policy: GatePolicy) -> str | None:
    n = int(mask.sum())
    if n < policy.min_slice_rows:
        return f"skipped: {n} rows < min_slice_rows {policy.min_slice_rows}"
    if metric in REGRESSION_METRICS:
        return None
    n_pos = int(y[mask].sum())
    if n_pos in (0, n):
        return f"skipped: a single class ({'all positive' if n_pos else 'no positive'} rows)"
    if metric in RANK_METRICS and n_pos < policy.min_slice_positives:
        return (f"skipped: {n_pos} positives < min_slice_positives {policy.min_slice_positives} (a rank metric "
                "on so few positives decides at random)")
    return None


def _judged_slices(metric: str, y: np.ndarray, frame: pd.DataFrame | None,
                   policy: GatePolicy) -> list[tuple[tuple[str, Any], np.ndarray]]:
    return [((c, v), m) for c, v, m in _slice_rows(frame, policy) if _skip_reason(metric, y, m, policy) is None]


def _evaluate_slices(metric: str, y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None,
                     frame: pd.DataFrame | None, policy: GatePolicy, judged: list, slice_boot: list[np.ndarray],
                     inflate: float) -> list[dict]:
    """Every slice reported; the judged ones (champion present, enough rows and positives) get a paired interval
    and a one-sided bootstrap p-value for "degrades by more than max_slice_degradation", and fail when Holm's
    step-down procedure rejects at ``1 - confidence`` across all judged slices (family-wise error control)."""
    sign, delta = _sign(metric), policy.max_slice_degradation
    boot_of = {key: b for (key, _), b in zip(judged, slice_boot, strict=True)}
    out: list[dict] = []
    for column, value, mask in _slice_rows(frame, policy):
        ys = y[mask]
        row: dict[str, Any] = {"column": column, "value": value, "n": int(mask.sum()),
                               "n_positive": None if metric in REGRESSION_METRICS else int(ys.sum()),
                               "candidate": None, "champion": None, "difference": None, "ci_low": None,
                               "ci_high": None, "p_value": None, "holm_threshold": None, "passed": None,
                               "skipped": True, "reason": ""}
        skip = _skip_reason(metric, y, mask, policy)
        if skip is not None:
            row["reason"] = skip
        else:
            row["candidate"] = metric_value(metric, ys, cand[mask])
            if champ is None:
                row["reason"] = "skipped: no champion to compare with (first model); reported for information"
            else:
                row["champion"] = metric_value(metric, ys, champ[mask])
                row["difference"] = sign * (row["candidate"] - row["champion"])
                b = boot_of[(column, value)]
                diffs = sign * (b[:, 0] - b[:, 1])
                diffs = _inflate(diffs[np.isfinite(diffs)], row["difference"], inflate)
                row["ci_low"], row["ci_high"] = _percentiles(diffs, policy.confidence)
                # H0: the slice degrades by at most delta; small p = evidence it degrades by more
                row["p_value"] = float((1 + np.sum(diffs >= -delta)) / (1 + len(diffs)))
                row["skipped"] = False
        out.append(row)
    _holm([r for r in out if not r["skipped"]], 1 - policy.confidence, delta)
    return out


def _holm(rows: list[dict], alpha: float, delta: float) -> None:
    """Holm's step-down: sort by p-value; the i-th smallest (0-based) is rejected while p <= alpha / (m - i)."""
    m = len(rows)
    rejecting = True
    for i, row in enumerate(sorted(rows, key=lambda r: r["p_value"])):
        row["holm_threshold"] = alpha / (m - i)
        rejecting = rejecting and row["p_value"] <= row["holm_threshold"]
        row["passed"] = not rejecting
        row["reason"] = ("" if row["passed"] else f"degrades by more than max_slice_degradation {delta} "
                         f"(Holm over {m} slices at {alpha:g})")


# -- vectorised bootstrap ----------------------------------------------------------------------------------


def _bootstrap_values(metric: str, y: np.ndarray, scores: Sequence[np.ndarray], n_resamples: int,
                      seed: int, blocks: np.ndarray | None = None,
                      subsets: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, list[np.ndarray]]:
    """Metric of every model on ``n_resamples`` non-degenerate resamples: shape (n_resamples, len(scores)), and
    the same for every boolean row mask of ``subsets`` (slices) on the *same* resamples (NaN where a resample
    holds a single class of that subset).

    ``blocks=None`` resamples rows; otherwise ``blocks`` (one label per row, e.g. the flight day) names the
    resampling units: a resample draws as many blocks as there are, with replacement, and takes all their rows."""
    if n_resamples < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_resamples}")
    if metric not in REGRESSION_METRICS and y.min() == y.max():
        raise ValueError("y_true has a single class: no resample can contain both")
    if blocks is None:
        return _row_bootstrap(metric, y, scores, n_resamples, seed, subsets)
    return _block_bootstrap(metric, y, scores, n_resamples, seed, blocks, subsets)


def _row_bootstrap(metric: str, y: np.ndarray, scores: Sequence[np.ndarray], n_resamples: int, seed: int,
                   subsets: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    n = len(y)
    prepared = [_prepare(metric, y, s) for s in scores]
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // n))
    out = np.empty((n_resamples, len(scores)))
    sub_out = [np.full((n_resamples, len(scores)), np.nan) for _ in subsets]
    filled = drawn = 0
    while filled < n_resamples:
        if drawn >= _MAX_DRAWS_PER_RESAMPLE * n_resamples:
            raise RuntimeError(f"{drawn} resamples drawn, fewer than {n_resamples} with both classes")
        idx = rng.integers(0, n, size=(block, n))
        drawn += block
        if metric not in REGRESSION_METRICS:
            n_pos = y[idx].sum(axis=1)
            idx = idx[(n_pos > 0) & (n_pos < n)]  # n_pos == n: no negative drawn
        idx = idx[: n_resamples - filled]
        if len(idx):
            for j, p in enumerate(prepared):
                out[filled:filled + len(idx), j] = _resampled_metric(metric, p, idx)
                for mask, target in zip(subsets, sub_out, strict=True):
                    target[filled:filled + len(idx), j] = _resampled_metric(metric, p, idx, weights=mask[idx])
            filled += len(idx)
    return out, sub_out


def _block_bootstrap(metric: str, y: np.ndarray, scores: Sequence[np.ndarray], n_resamples: int, seed: int,
                     blocks: np.ndarray, subsets: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each model's rows are summarised once per block (counts per score group and label, or loss sums); a
    resample is a vector of block multiplicities, so its counts are one matrix product."""
    block_ids, block_of_row = np.unique(np.asarray(blocks), return_inverse=True)
    n_blocks = len(block_ids)
    regression = metric in REGRESSION_METRICS
    pos_per_block = np.bincount(block_of_row, weights=None if regression else y, minlength=n_blocks)
    neg_per_block = np.bincount(block_of_row, weights=None if regression else 1 - y, minlength=n_blocks)
    masks = [np.ones(len(y), dtype=bool), *subsets]
    tables = [[_block_table(metric, y, s, block_of_row, n_blocks, m) for s in scores] for m in masks]
    rng = np.random.default_rng(seed)
    out = [np.full((n_resamples, len(scores)), np.nan) for _ in masks]
    width = max(t.shape[1] for row in tables for t in row)
    chunk = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(width, n_blocks)))
    filled = drawn = 0
    while filled < n_resamples:
        if drawn >= _MAX_DRAWS_PER_RESAMPLE * n_resamples:
            raise RuntimeError(f"{drawn} block resamples drawn, fewer than {n_resamples} with both classes")
        drawn_blocks = rng.integers(0, n_blocks, size=(chunk, n_blocks))
        drawn += chunk
        weights = np.stack([np.bincount(row, minlength=n_blocks) for row in drawn_blocks]).astype(np.float64)
        ok = (weights @ pos_per_block > 0) & (weights @ neg_per_block > 0)
        weights = weights[ok][: n_resamples - filled]
        if len(weights):
            for target, row in zip(out, tables, strict=True):
                for j, table in enumerate(row):
                    target[filled:filled + len(weights), j] = _metric_from_table(metric, weights @ table)
            filled += len(weights)
    return out[0], out[1:]


def _block_table(metric: str, y: np.ndarray, s: np.ndarray, block_of_row: np.ndarray, n_blocks: int,
                 mask: np.ndarray) -> np.ndarray:
    """Per block: ``[loss sum, rows]`` (the losses) or counts per (score group, label) as in :func:`_prepare`."""
    p = _prepare(metric, y[mask], s[mask])  # score groups of the subset's own rows: a narrow table
    b = block_of_row[mask]
    if metric in LOSS_METRICS:
        return np.stack([np.bincount(b, weights=p["loss"], minlength=n_blocks),
                         np.bincount(b, minlength=n_blocks).astype(np.float64)], axis=1)
    width = 2 * p["groups"]
    keys = b.astype(np.int64) * width + p["bin"]
    return np.bincount(keys, minlength=n_blocks * width).reshape(n_blocks, width).astype(np.float64)


def _metric_from_table(metric: str, table: np.ndarray) -> np.ndarray:
    if metric in LOSS_METRICS:
        with np.errstate(invalid="ignore", divide="ignore"):
            return _from_mean_loss(metric, table[:, 0] / table[:, 1])
    counts = table.reshape(len(table), -1, 2)
    return _metric_from_counts(metric, counts[:, :, 0], counts[:, :, 1])


def _prepare(metric: str, y: np.ndarray, s: np.ndarray) -> dict:
    """Per-model work shared by all resamples: per-row losses, or each row's bin ``2 * group + label`` where
    ``group`` numbers the distinct scores from the highest (0) down."""
    if metric == "rmse":
        return {"loss": (s - y) ** 2}
    if metric == "mae":
        return {"loss": np.abs(s - y)}
    if metric == "log_loss":
        eps = np.finfo(np.float64).eps
        p1, p0 = np.clip(s, eps, 1 - eps), np.clip(1 - s, eps, 1 - eps)  # clipped as scikit-learn does
        return {"loss": -np.where(y == 1, np.log(p1), np.log(p0))}
    distinct, group = np.unique(-s, return_inverse=True)
    return {"bin": 2 * group.astype(np.int64) + y, "groups": len(distinct)}


def _resampled_metric(metric: str, p: dict, idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The metric on each resample (a row of row indices ``idx``), one value per resample; with ``weights`` (0/1
    per drawn row) only on the drawn rows of a subset (NaN where that leaves a single class)."""
    if metric in LOSS_METRICS:
        if weights is None:
            return _from_mean_loss(metric, p["loss"][idx].mean(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return _from_mean_loss(metric, (p["loss"][idx] * weights).sum(axis=1) / weights.sum(axis=1))
    # counts[r, g, label]: how many rows of score group g (descending score) and that label resample r drew
    block, width = len(idx), 2 * p["groups"]
    keys = p["bin"][idx] + (np.arange(block, dtype=np.int64) * width)[:, None]
    counts = np.bincount(keys.ravel(), weights=None if weights is None else weights.ravel().astype(np.float64),
                         minlength=block * width).reshape(block, p["groups"], 2)
    return _metric_from_counts(metric, counts[:, :, 0], counts[:, :, 1])


def _from_mean_loss(metric: str, mean_loss: np.ndarray) -> np.ndarray:
    return np.sqrt(mean_loss) if metric == "rmse" else mean_loss


def _metric_from_counts(metric: str, neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """ROC AUC or average precision of each resample from its (resample, score group) counts of negatives and
    positives, groups ordered by descending score; NaN for a resample without both classes."""
    fp = np.cumsum(neg, axis=1)  # negatives scored at or above each group
    total_neg = fp[:, -1]
    total_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc":
            # exact Mann-Whitney count: a positive beats each lower-scored negative, half of each tied one
            twice_beaten = 2 * (total_neg[:, None] - fp) + neg
            value = np.einsum("ij,ij->i", pos, twice_beaten) / (2.0 * total_pos * total_neg)
        else:
            # average precision: sum over thresholds (distinct scores) of recall step x precision there
            tp = np.cumsum(pos, axis=1)
            precision = tp / np.maximum(tp + fp, 1)  # tp + fp == 0 only where tp == 0 (and pos == 0)
            value = np.einsum("ij,ij->i", pos, precision) / total_pos
    return np.where((total_pos > 0) & (total_neg > 0), value, np.nan)


def chance_level(metric: str, y_true: Any) -> float:
    """What a model without signal scores on ``y_true``: ROC AUC 0.5, average precision the positive rate, log
    loss the base rate's own log loss; RMSE and MAE the error of one constant for every row, the labels' mean
    (RMSE: their standard deviation) or median (MAE: their mean absolute deviation from it)."""
    y = _as_labels(y_true, metric)
    if metric == "rmse":
        return float(np.std(y))
    if metric == "mae":
        return float(np.mean(np.abs(y - np.median(y))))
    rate = float(y.mean())
    if metric == "roc_auc":
        return 0.5
    if metric == "average_precision":
        return rate
    return float(-(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)))


def _as_blocks(blocks: Any | None, n: int) -> np.ndarray | None:
    if blocks is None:
        return None
    b = np.asarray(blocks)
    if b.shape != (n,):
        raise ValueError(f"blocks: expected one label per row, shape ({n},), got {b.shape}")
    if pd.isna(pd.Series(b)).any():
        raise ValueError("blocks: a row without its block (day)")
    if len(np.unique(b)) < 2:
        raise ValueError("blocks: a block bootstrap needs at least two blocks (days)")
    return b


def _inflation(blocks: np.ndarray | None, confidence: float) -> float:
    """How far to widen a block bootstrap's interval about the point estimate, for B blocks (1 for rows):
    ``sqrt(B / (B - 1)) * t(B - 1) / z``. The bootstrap spread is that of a mean of B draws with the *sample*
    variance (biased low by (B - 1) / B), and with few blocks the percentile interval should use Student's t with
    B - 1 degrees of freedom rather than normal quantiles -- the usual small-cluster corrections. Negligible for
    rows and many blocks; for a 7-day window x1.35 at 95 %."""
    if blocks is None:
        return 1.0
    from scipy.stats import norm, t

    b = len(np.unique(blocks))
    q = 1 - (1 - confidence) / 2
    return float(math.sqrt(b / (b - 1)) * t.ppf(q, b - 1) / norm.ppf(q))


def _inflate(values: np.ndarray, point: float, factor: float) -> np.ndarray:
    return values if factor == 1.0 else point + factor * (values - point)


def _interval(values: np.ndarray, point: float, confidence: float, factor: float) -> tuple[float, float]:
    return _percentiles(_inflate(values[np.isfinite(values)], point, factor), confidence)


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


def _as_labels(y_true: Any, metric: str) -> np.ndarray:
    """Binary metrics: 0/1 integers; regression metrics: finite floats."""
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if metric in REGRESSION_METRICS:
        if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"y_true must be numeric for {metric}, got {y.dtype}")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError(f"y_true: {int((~np.isfinite(y)).sum())} non-finite label(s)")
        return y
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
