"""Drift verdicts on the real 2013 flights, on months never used to choose the rule's constants.

A flight_delay reference is frozen as the platform freezes it (35 training days, the model's scores, calibrated
per day by prediction cutoff); the days the champion would score next (15 to 45 days after the training window:
after the validation and test windows, up to the champion's maximum age) are judged against it. The per-day
feature frames come from one training-set snapshot (every feature per flight, point in time), so no day is scored
through the Dagster job. Building it (load Jul 15 .. Nov 1, dbt, Feast, the snapshot) takes about 2 minutes on
2 cores; the verdicts about 15 seconds.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from batch_platform.lib import drift, training
from batch_platform.lib.specs import load_specs
from batch_platform.lib.time_model import load_time_model
from batch_platform.lib.training_set import SPLIT
from tests.conftest import replayed_platform

SPEC = "flight_delay"
TRAIN_LAST = dt.date(2013, 9, 15)
TRAIN_DAYS, VALIDATION_DAYS = 35, 7
SCORED = [TRAIN_LAST + dt.timedelta(days=d) for d in range(15, 46)]  # Sep 30 .. Oct 30
HISTORY_DAYS = 28  # the longest feature window
FIRST = TRAIN_LAST - dt.timedelta(days=TRAIN_DAYS - 1 + HISTORY_DAYS)
LAST = SCORED[-1] + dt.timedelta(days=2)  # the scored days' labels final: they are in the snapshot


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """(reference, {day: (features, scores)}) for the held-out days."""
    base = tmp_path_factory.mktemp("drift_real")
    windows = {"train_days": (LAST - FIRST).days, "validation_days": 1, "test_days": 1}
    with replayed_platform(base, SPEC, windows, FIRST, LAST) as (env, instance, defs, _):
        cutoff = load_time_model().published_at("flights", LAST)
        built = defs.resolve_job_def("train_gate_promote").execute_in_process(
            instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey([f"{SPEC}_training_set"])],
            run_config={"ops": {f"{SPEC}_training_set": {"config": {"training_cutoff": cutoff.isoformat()}}}})
        assert built.success
        (md,) = [e.event_specific_data.materialization.metadata for e in built.all_events
                 if e.event_type_value == "ASSET_MATERIALIZATION"]
        snapshot = pd.read_parquet(md["snapshot"].value)
        spec = load_specs()[SPEC]
    dates = snapshot[spec.label.date_column].dt.date
    train_days = [TRAIN_LAST - dt.timedelta(days=d) for d in range(TRAIN_DAYS)]
    validation_days = [TRAIN_LAST + dt.timedelta(days=d) for d in range(1, VALIDATION_DAYS + 1)]
    frame = snapshot[dates.isin(train_days + validation_days)].copy()
    frame[SPLIT] = np.where(dates[frame.index].isin(train_days), "train", "validation")
    trained = training.train(frame, spec, training.TrainConfig(n_trials=1))
    booster = training.load_booster(trained.model_text)
    rows = frame[frame[SPLIT] == "train"]
    reference = drift.build_reference(rows, booster.feature_name(), trained.categorical,
                                      training.score(booster, rows, trained.categorical),
                                      rows=spec.monitoring.drift.reference_rows, exclude=spec.monitoring.drift.exclude)
    scored = {}
    for day in SCORED:
        batch = snapshot[dates == day]
        scored[day] = (batch, training.score(booster, batch, trained.categorical))
    return reference, scored, drift.DriftThresholds.from_spec(spec.monitoring.drift)


def test_held_out_days_rarely_error(days):
    reference, scored, thresholds = days
    assert len(reference.calibration["batches"]) == TRAIN_DAYS
    results = {day: drift.evaluate(reference, *batch, thresholds) for day, batch in scored.items()}
    errors = {day: r.reasons() for day, r in results.items() if r.severity == drift.ERROR}
    print(f"held-out days ERROR: {len(errors)}/{len(results)} {errors}")
    assert len(errors) <= 0.05 * len(results)


def test_a_quarter_sigma_shift_of_a_steady_column_is_an_error(days):
    """A 0.25σ shift of one column, over the held-out days: the steady plane attributes make the day ERROR, the
    7-day delay rates (whose training days already vary by more than that) do not."""
    reference, scored, thresholds = days
    power = {}
    for column in ("plane_year_built", "plane_engines", "carrier_delay_rate_7d", "route_delay_rate_7d"):
        shift = 0.25 * reference.reference_std[column]
        hits = 0
        for features, scores in scored.values():
            moved = features.copy()
            moved[column] = moved[column] + shift
            result = drift.evaluate(reference, moved, scores, thresholds)
            hits += result.severity == drift.ERROR and any(column in r for r in result.reasons())
        power[column] = hits / len(scored)
    print("0.25σ shift, share of held-out days ERROR through the column:", power)
    assert power["plane_year_built"] >= 0.95 and power["plane_engines"] >= 0.95
    assert power["carrier_delay_rate_7d"] < 0.5 and power["route_delay_rate_7d"] < 0.5


@pytest.mark.parametrize("column", ["plane_seats", "route_delay_rate_28d", "plane_manufacturer"])
def test_a_feed_gone_null_makes_every_day_an_error(days, column):
    reference, scored, thresholds = days
    for features, scores in scored.values():
        broken = features.copy()
        broken[column] = None
        result = drift.evaluate(reference, broken, scores, thresholds)
        assert result.severity == drift.ERROR and any(r.startswith(f"{column} missing 100%") for r in result.reasons())
