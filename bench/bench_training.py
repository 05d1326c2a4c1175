"""Model training: the platform's ``training.train`` (the candidate search: each parameter set trained with early
stopping on the validation window, the best kept) against ``lgb.train`` called directly with the same parameter
sets on the same rows (numeric columns as float64, the categoricals as pandas categoricals), as a bare script
would. Report only (no target): the figure shows what the platform adds around LightGBM.

The training set is synthetic, in the shape of ``flight_delay``'s (its spec: key, date column, categoricals
``carrier`` and ``origin``; 20 numeric features with some missing values; a label that depends on a few of them),
x1: 35 days of ~860 flights (train 28 days, validation 7), x10: 350 days. Median of ``RUNS``; both sides must
produce the same trees (the model text equal).

    python -m bench.bench_training        (or: python -m bench --only training)
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from bench.measure import figure, median, timed

SPEC = "flight_delay"
DAYS = {"x1": 35, "x10": 350}
FLIGHTS_PER_DAY = 860
RUNS = 3


def _quick() -> None:
    global DAYS, RUNS
    DAYS, RUNS = {"x1": 7, "x10": 35}, 3


def training_frame(spec, days: int, rng: np.random.Generator) -> pd.DataFrame:
    from batch_platform.lib.training_set import EVENT_TIMESTAMP, LABEL, SPLIT

    n = days * FLIGHTS_PER_DAY
    day = np.repeat(np.arange(days), FLIGHTS_PER_DAY)
    date = pd.Timestamp("2013-01-01") + pd.to_timedelta(day, unit="D")
    frame = pd.DataFrame({spec.entity.key: [f"f{i:08d}" for i in range(n)], spec.label.date_column: date.date,
                          EVENT_TIMESTAMP: date.tz_localize("UTC") - pd.Timedelta(hours=2)})
    frame["carrier"] = rng.choice([f"C{i:02d}" for i in range(16)], n)
    frame["origin"] = rng.choice(["EWR", "JFK", "LGA"], n)
    for i in range(20):
        x = rng.normal(size=n)
        x[rng.random(n) < 0.05] = np.nan
        frame[f"num{i:02d}"] = x
    logit = (np.nan_to_num(frame["num00"]) - 0.5 * np.nan_to_num(frame["num01"])
             + (frame["carrier"] < "C04") * 0.8 - 1.2)
    frame[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    frame[SPLIT] = np.where(day < int(days * 0.8), "train", "validation")
    return frame


def bare(frame: pd.DataFrame, spec, params: list[dict], rounds: int, stopping: int) -> list[tuple[float, str]]:
    """``lgb.train`` per parameter set on the same rows: (validation metric, model text) each."""
    import lightgbm as lgb

    from batch_platform.lib.training_set import LABEL, SPLIT

    frame = frame.sort_values(spec.entity.key, kind="stable").reset_index(drop=True)
    features = sorted(c for c in frame.columns if c.startswith("num") or c in ("carrier", "origin"))
    X = frame[features].copy()
    for c in ("carrier", "origin"):
        X[c] = X[c].astype("category")
    train, val = (frame[SPLIT] == "train").to_numpy(), (frame[SPLIT] == "validation").to_numpy()
    y = frame[LABEL].to_numpy()
    out = []
    for p in params:
        dtrain = lgb.Dataset(X[train], label=y[train], categorical_feature=["carrier", "origin"], free_raw_data=False)
        dval = lgb.Dataset(X[val], label=y[val], reference=dtrain)
        booster = lgb.train(p, dtrain, num_boost_round=rounds, valid_sets=[dval], valid_names=["validation"],
                            callbacks=[lgb.early_stopping(stopping, verbose=False)])
        out.append((float(booster.best_score["validation"][p["metric"]]),
                    booster.model_to_string(num_iteration=booster.best_iteration)))
    return out


def run(quick: bool = False) -> list[dict]:
    if quick:
        _quick()
    from batch_platform.lib import training
    from batch_platform.lib.specs import load_specs

    import lightgbm  # noqa: F401 -- imported before the clock (a second), as in a run that trains

    spec = load_specs()[SPEC]
    config = training.TrainConfig()
    params = [{**training._base_params(spec, config), **point} for point in training.candidate_params(config)]
    figures = []
    for scale, days in DAYS.items():
        frame = training_frame(spec, days, np.random.default_rng(days))
        ours_s, ours = timed(lambda: training.train(frame, spec, config), RUNS)
        theirs_s, theirs = timed(lambda: bare(frame, spec, params, config.max_rounds, config.early_stopping_rounds),
                                 RUNS)
        best = max(theirs, key=lambda t: t[0]) if spec.gate.metric in ("roc_auc", "average_precision") else \
            min(theirs, key=lambda t: t[0])
        same = [t["validation_metric"] for t in ours.trials] == [m for m, _ in theirs] and \
            ours.model_text == best[1]
        figures.append(figure(
            f"LightGBM training, {len(params)} parameter sets, {scale} ({len(frame):,} rows)", "s",
            median(ours_s), median(theirs_s), target=None, meets=None, identical=same,
            platform_runs=ours_s, raw_runs=theirs_s,
            note="training.train vs lgb.train with the same parameters on the same rows (report only)"))
    return figures


def main(quick: bool = False) -> list[dict]:
    from bench.report import print_table

    figures = run(quick)
    print_table("training: the platform's candidate search vs lgb.train", figures)
    return figures


if __name__ == "__main__":
    sys.exit(0 if all(f["identical"] for f in main("--quick" in sys.argv)) else 1)
