"""Performance estimated before labels (lib/performance_estimate.py): synthetic days whose labels are drawn from
known probabilities, a miscalibrated model whose calibration map repairs the estimate, and the real 2013 flights —
models trained as the platform trains them, the estimate of each later day against its realised metric."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from batch_platform import settings
from batch_platform.lib import evaluation, model_ops, training, training_set, warehouse
from batch_platform.lib import performance_estimate as pe
from batch_platform.lib.feature_store import FeatureStoreClient
from batch_platform.lib.registry import ModelRegistry
from batch_platform.lib.specs import DEFAULT_SPECS_DIR, SPECS_DIR_VAR, load_specs
from batch_platform.lib.time_model import load_time_model
from tests.conftest import load_days, platform_env_vars

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


# ---------------------------------------------------------------------------------------------------------------
# The real 2013 flights: candidates trained by the platform (job train_and_gate, shipped specs and windows) as of the
# publication of 2013-02-28's flights, their calibration map frozen in the version's metrics; then every later day of
# March and April: the estimate from that day's scores against its realised metric, once its labels are in. Module
# runtime: 80 s on two idle cores, 3 min on two busy ones (loading four months, dbt, then training sets and candidates).

REAL_FIRST, REAL_LAST = dt.date(2013, 1, 1), dt.date(2013, 4, 30)
TRAINED_THROUGH = dt.date(2013, 2, 28)
SPECS = ("flight_delay", "flight_cancellation")


@pytest.fixture(scope="module")
def real_days(tmp_path_factory):
    """Per spec, per later day: the estimate of its gate metric (and the others) and the realised value."""
    base = tmp_path_factory.mktemp("performance_estimate")
    env = platform_env_vars(base)
    env[SPECS_DIR_VAR].mkdir(parents=True)
    for name in SPECS:  # the shipped specs: the candidates are trained as in production
        shutil.copy(DEFAULT_SPECS_DIR / f"{name}.yaml", env[SPECS_DIR_VAR] / f"{name}.yaml")
    cutoff = load_time_model().published_at("flights", TRAINED_THROUGH)
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, str(v))
        load_days(env, REAL_FIRST, REAL_LAST)
        from batch_platform.definitions import defs as lazy_defs

        defs = lazy_defs()
        # dbt + feast apply; no online store (the days are scored here from offline features)
        offline = [k for k in defs.resolve_all_asset_keys()
                   if k.path[0] in ("staging", "intermediate", "marts", "seeds")]
        offline.append(dg.AssetKey(["feast", "feature_definitions"]))
        assert defs.resolve_job_def("build_features").execute_in_process(
            instance=instance, raise_on_error=False, asset_selection=offline).success
        trained = defs.resolve_job_def("train_and_gate").execute_in_process(
            instance=instance, raise_on_error=False, run_config={"ops": {
                f"{name}_training_set": {"config": {"training_cutoff": cutoff.isoformat()}} for name in SPECS}})
        assert all(trained.asset_materializations_for_node(f"{name}_candidate_model") for name in SPECS)
        registry = ModelRegistry(env[settings.REGISTRY_VAR])
        client = FeatureStoreClient(settings.FEATURE_REPO_DIR)
        rows = []
        for name, spec in load_specs().items():
            (version,) = registry.list_versions(name)
            calibration = pe.calibration_of(version.metrics)
            booster = model_ops.load_model(version)
            # every labelled flight of the later days, with its features as of the evening before
            wide = spec.model_copy(update={"windows": spec.windows.model_copy(update={"train_days": 120})})
            with warehouse.connect(env[settings.WAREHOUSE_VAR], read_only=True) as con:
                labels = training_set.label_frame(con, wide, load_time_model().published_at("flights", REAL_LAST))
            labels = labels[pd.to_datetime(labels[spec.label.date_column]).dt.date > TRAINED_THROUGH]
            frame = client.historical_features(labels, spec.feature_service,
                                               timestamp_column=training_set.EVENT_TIMESTAMP)
            frame["score"] = training.score(booster, frame, version.fingerprint["categorical"])
            for day, g in frame.groupby(pd.to_datetime(frame[spec.label.date_column]).dt.date):
                y = g[training_set.LABEL].to_numpy().astype(int)
                realised = evaluation.metrics(y, g["score"].to_numpy())
                est = pe.estimate(g["score"].to_numpy(), calibration, draws=300, seed=0)
                for m in pe.METRICS:
                    rows.append({"spec": name, "gate": m == spec.gate.metric, "day": day, "month": day.month,
                                 "metric": m, "estimate": est[m].expected, "mc_std": est[m].mc_std,
                                 "low": est[m].low, "high": est[m].high, "realised": realised.get(m),
                                 "test_window": version.metrics["test"].get(m), "rows": len(y)})
        yield {"days": pd.DataFrame(rows), "versions": {n: registry.list_versions(n)[0] for n in SPECS}}


# Per gate metric: the largest monthly MAE accepted (observed on March and April: roc_auc 0.057 and 0.048 for
# flight_delay, average precision 0.064 and 0.066 for flight_cancellation).
MAE_TOLERANCE = {"roc_auc": 0.08, "average_precision": 0.09}
BIAS_TOLERANCE = 0.05  # |mean error| over a month (observed: at most 0.033)
SPREAD_FACTOR = 1.25  # MAE / the realised metric's own day-to-day spread (observed: 0.86 .. 1.08)


def _monthly(days):
    d = days[days["gate"]].dropna(subset=["realised"]).copy()
    d["error"] = d["estimate"] - d["realised"]
    month_mean = d.groupby(["spec", "metric", "month"])["realised"].transform("mean")
    d["spread"] = (d["realised"] - month_mean).abs()
    d["inside"] = (d["low"] <= d["realised"]) & (d["realised"] <= d["high"])
    return d.groupby(["spec", "metric", "month"]).agg(
        days=("error", "size"), mae=("error", lambda e: e.abs().mean()), bias=("error", "mean"),
        spread=("spread", "mean"), mc_std=("mc_std", "mean"), inside=("inside", "mean"))


def test_real_days_estimate_within_the_days_own_spread(real_days):
    """Estimate vs realised gate metric on each day of March and April 2013, models trained through February.

    Tolerances, and why: a flight day's realised metric scatters around its month's mean far more than independent
    labels would make it (the Monte-Carlo 90 % interval holds only 20-45 % of flight_delay's days): a day's delays
    share a cause — weather, congestion — that the evening-before features only partly see. No estimate made
    before the day can follow that scatter, so the yardstick is the scatter itself: the mean absolute deviation of
    the realised metric from its own monthly mean (known only in hindsight). The estimate's MAE must stay within
    1.25 times it, under an absolute cap per metric, and the monthly mean error within 0.05: the estimate is as close
    to each day as the month's realised average would be, and not biased over the month."""
    table = _monthly(real_days["days"])
    print("\n" + table.round(4).to_string())
    assert set(table.index.get_level_values("metric")) == {"roc_auc", "average_precision"}
    for (spec, metric, month), row in table.iterrows():
        where = f"{spec} {metric} month {month}: {row.to_dict()}"
        assert row["days"] >= 28, where
        assert row["mae"] <= MAE_TOLERANCE[metric], where
        assert row["mae"] <= SPREAD_FACTOR * row["spread"], where
        assert abs(row["bias"]) <= BIAS_TOLERANCE, where


def test_real_calibration_is_frozen_with_the_version(real_days):
    """The candidate asset stores its map in the version's metrics: fitted on the validation and test windows,
    strict JSON, monotone, and it maps that window's scores to about its positive rate."""
    for name, version in real_days["versions"].items():
        stored = version.metrics[pe.CALIBRATION]
        json.dumps(stored, allow_nan=False)
        cal = pe.CalibrationMap.from_json(stored)
        assert cal.window == "validation+test"
        assert cal.rows == version.metrics["validation"]["rows"] + version.metrics["test"]["rows"]
        assert np.all(np.diff(cal.probabilities) >= 0) and 0 <= min(cal.probabilities) <= max(cal.probabilities) <= 1
        rate = (version.metrics["validation"]["positive_rate"] * version.metrics["validation"]["rows"]
                + version.metrics["test"]["positive_rate"] * version.metrics["test"]["rows"]) / cal.rows
        assert cal.positives == round(rate * cal.rows), name
