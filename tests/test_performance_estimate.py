"""Performance estimated before labels (lib/performance_estimate.py): synthetic days whose labels are drawn from
known probabilities and a miscalibrated model whose calibration map repairs the estimate. On the real 2013 flights
(a February model, each day of March and April against its realised metric) it is tested in test_loop.py, on the
loop's data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from batch_platform.lib import evaluation
from batch_platform.lib import performance_estimate as pe

ROWS = 900  # about one day of flights from New York


def _day(rng: np.random.Generator, base_rate: float, rows: int = ROWS) -> np.ndarray:
    """Calibrated probabilities of one synthetic day: a beta spread around ``base_rate``, rounded so that scores
    tie as a model's do."""
    return np.round(rng.beta(0.8, 0.8 * (1 / base_rate - 1), rows), 3)


def _sklearn(y: np.ndarray, q: np.ndarray) -> dict[str, float]:
    return {k: v for k, v in evaluation.metrics(y, q).items() if k in pe.METRICS}


def test_label_metrics_are_sklearns_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(400), 2)  # many ties
    y = rng.random((6, 400)) < scores
    got = pe.label_metrics(scores, y)
    np.testing.assert_allclose(got["roc_auc"], [roc_auc_score(r, scores) for r in y])
    np.testing.assert_allclose(got["average_precision"], [average_precision_score(r, scores) for r in y])
    np.testing.assert_allclose(got["log_loss"], [log_loss(r, scores) for r in y])
    # label sets with one class have no AUC: left out
    assert len(pe.label_metrics(scores, np.zeros((2, 400), bool))["roc_auc"]) == 0


@pytest.mark.parametrize("base_rate", [0.2, 0.025])
def test_calibrated_scores_estimate_tracks_realised(base_rate):
    """Labels drawn from the scores themselves: for each metric, the analytic estimate is the Monte-Carlo mean up to a
    small ratio bias, the realised value averages to the estimate over days, its mean absolute error is what chance
    alone gives (the Monte-Carlo spread: a normal's mean absolute deviation is 0.8 sd), and the 90 % interval holds
    about 90 % of the days."""
    rng = np.random.default_rng(7)
    errors = {m: [] for m in pe.METRICS}
    spreads = {m: [] for m in pe.METRICS}
    inside = {m: 0 for m in pe.METRICS}
    days = 150
    for seed in range(days):
        p = _day(rng, base_rate)
        est = pe.estimate(p, draws=400, seed=seed)
        y = (rng.random(ROWS) < p).astype(int)
        realised = _sklearn(y, p)
        for m in pe.METRICS:
            e = est[m]
            assert abs(e.expected - e.mc_mean) < 0.25 * e.mc_std, (m, e.expected, e.mc_mean, e.mc_std)
            errors[m].append(realised[m] - e.expected)
            spreads[m].append(e.mc_std)
            inside[m] += e.low <= realised[m] <= e.high
    for m in pe.METRICS:
        err, sd = np.array(errors[m]), float(np.mean(spreads[m]))
        mae = float(np.abs(err).mean())
        assert abs(err.mean()) < 3 * sd / np.sqrt(days) + 0.1 * sd, (m, err.mean(), sd)  # no bias beyond noise
        assert 0.6 * sd < mae < 1.0 * sd, (m, mae, sd)  # the MAE is the sampling spread, not more
        assert 0.82 <= inside[m] / days <= 0.97, (m, inside[m])


def test_calibration_map_repairs_miscalibrated_scores():
    """A model that ranks well but is overconfident and shifted (q = sigmoid(2.5 z + 1.5) for a true
    p = sigmoid(z)): its raw scores as probabilities misstate every metric; the isotonic map fitted on a labelled
    window brings the estimate back to the sampling spread. The map is itself estimated from labels (its error is
    common to every day: about 1.25 sd at worst over the seeds tried), hence 1.5 sd, not the 1.0 of exact
    probabilities."""
    rng = np.random.default_rng(11)

    def model_day(rows: int):
        z = rng.normal(-1.6, 1.0, rows)
        p = 1 / (1 + np.exp(-z))
        q = 1 / (1 + np.exp(-(2.5 * z + 1.5)))
        return p, q

    p_fit, q_fit = model_day(12_000)  # two weeks of labelled validation and test days
    calibration = pe.fit_calibration((rng.random(len(p_fit)) < p_fit).astype(int), q_fit, window="validation+test")
    stored = pe.CalibrationMap.from_json(json.loads(json.dumps(calibration.to_json(), allow_nan=False)))
    assert stored == calibration

    raw_err = {m: [] for m in pe.METRICS}
    cal_err = {m: [] for m in pe.METRICS}
    spread = {m: [] for m in pe.METRICS}
    for seed in range(60):
        p, q = model_day(ROWS)
        y = (rng.random(ROWS) < p).astype(int)
        realised = _sklearn(y, q)
        raw = pe.estimate(q, None, draws=0)
        cal = pe.estimate(q, stored, draws=300, seed=seed)
        for m in pe.METRICS:
            raw_err[m].append(abs(realised[m] - raw[m].expected))
            cal_err[m].append(abs(realised[m] - cal[m].expected))
            spread[m].append(cal[m].mc_std)
    for m in pe.METRICS:
        raw_mae, cal_mae, sd = np.mean(raw_err[m]), np.mean(cal_err[m]), np.mean(spread[m])
        assert cal_mae < 1.5 * sd, (m, cal_mae, sd)
        assert raw_mae > 2 * cal_mae, (m, raw_mae, cal_mae)


def test_calibration_map_is_monotone_bounded_json():
    rng = np.random.default_rng(3)
    q = rng.random(2000)
    cal = pe.fit_calibration((rng.random(2000) < q**2).astype(int), q)
    grid = np.linspace(-0.5, 1.5, 301)
    mapped = cal.apply(grid)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    assert pe.calibration_of({pe.CALIBRATION: cal.to_json()}) == cal and pe.calibration_of({"test": {}}) is None
    with pytest.raises(ValueError, match="both classes"):
        pe.fit_calibration(np.zeros(10), q[:10])
    const = pe.fit_calibration(np.r_[np.zeros(9), 1], np.full(10, 0.3))  # one block
    assert np.allclose(const.apply([0.0, 0.3, 1.0]), 0.1)


def test_degenerate_days():
    tied = pe.estimate(np.full(50, 0.4), draws=200)
    assert tied["roc_auc"].expected == pytest.approx(0.5) and tied["roc_auc"].mc_mean == pytest.approx(0.5)
    none = pe.estimate(np.zeros(20), draws=50)  # no positive expected: no AUC, no AP
    assert none["roc_auc"].expected is None and none["average_precision"].expected is None
    assert none["roc_auc"].mc_mean is None and none["roc_auc"].percentile(0.5) is None
    assert none["log_loss"].expected == pytest.approx(0.0, abs=1e-12)
    empty = pe.estimate(np.array([]), draws=10)
    assert empty.rows == 0 and empty["log_loss"].expected is None
    est = pe.estimate(_day(np.random.default_rng(1), 0.2), draws=500)
    e = est["roc_auc"]
    assert e.percentile(0.0) == 0.0 and e.percentile(1.0) == 1.0 and 0.3 < e.percentile(e.expected) < 0.7
    json.dumps(est.to_json(), allow_nan=False)
