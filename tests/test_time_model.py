"""The time model, the data clocks and the partitions derived from them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batch_platform import settings
from batch_platform.lib import clock as clocks
from batch_platform.lib.specs import DEFAULT_SPECS_DIR, ModelSpecError, load_spec, load_specs
from batch_platform.lib.time_model import TimeModelError, load_time_model

UTC = dt.UTC


def test_time_model_rules_in_new_york_time():
    tm = load_time_model()
    day = dt.date(2013, 3, 9)  # the night after is the spring-forward night
    assert tm.published_at("flights", day) == dt.datetime(2013, 3, 10, 10, tzinfo=UTC)  # 06:00 EDT
    assert tm.final_at("flights", day) == dt.datetime(2013, 3, 11, 10, tzinfo=UTC)  # two days later
    assert tm.final_at("weather", day) == tm.published_at("weather", day)  # final when published
    assert tm.published_at("flight_schedule", dt.date(2013, 1, 2)) == dt.datetime(2013, 1, 1, 11, tzinfo=UTC)
    # a batch published late is final no earlier than it was published
    late = dt.datetime(2013, 3, 20, tzinfo=UTC)
    assert tm.final_at("flights", day, late) == late
    assert tm.label_final_at("flight_labels", day) == tm.final_at("flights", day)
    # the newest flight day published at an instant: 06:00 is the edge
    assert tm.last_published_day("flights", dt.datetime(2013, 3, 10, 10, tzinfo=UTC)) == day
    assert tm.last_published_day("flights", dt.datetime(2013, 3, 10, 9, 59, tzinfo=UTC)) == day - dt.timedelta(1)
    assert tm.last_published_day("flight_schedule", dt.datetime(2013, 3, 10, 10, tzinfo=UTC)) == day + dt.timedelta(2)


def test_shipped_specs_follow_the_time_model():
    specs = load_specs(DEFAULT_SPECS_DIR)
    tm = load_time_model()
    for spec in specs.values():
        for day in (dt.date(2013, 1, 15), dt.date(2013, 7, 15)):
            # labels final exactly when the outcome-derived features may use the day (one rule for both)
            assert spec.label_final_at(day) == tm.label_final_at(spec.label.model, day)
            assert tm.published_at("flight_schedule", day) <= spec.prediction_cutoff(day)


def test_a_spec_whose_labels_are_final_before_the_feed_is_refused(tmp_path):
    import yaml

    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_cancellation.yaml").read_text())
    raw["label"]["embargo_days"] = 1  # the old rule: final the next morning, before late corrections
    (tmp_path / "flight_cancellation.yaml").write_text(yaml.safe_dump(raw))
    load_spec(tmp_path / "flight_cancellation.yaml")  # the file itself is valid...
    with pytest.raises(ModelSpecError, match="before feed 'flights' is final"):
        load_specs(tmp_path)  # ...but disagrees with the time model


def test_time_model_errors_are_named(tmp_path):
    bad = tmp_path / "tm.yaml"
    bad.write_text("timezone: America/New_York\nfeatures:\n  x: {feed: nope, valid_when: final}\n")
    with pytest.raises(TimeModelError, match="unknown feed 'nope'"):
        load_time_model(bad)
    # publication times moved to the source contracts: a time model that still declares them says where they went
    bad.write_text("timezone: America/New_York\nfeeds: {}\nfeatures: {}\n")
    with pytest.raises(TimeModelError, match="declared in its source contract"):
        load_time_model(bad)
    with pytest.raises(TimeModelError, match="no time model file"):
        load_time_model(tmp_path / "missing.yaml")


def test_live_clock_redates_by_whole_weeks_to_cover_yesterday_and_half_a_year_ahead():
    yesterday = dt.date(2026, 11, 29)
    c = clocks.live_clock_for(yesterday)
    assert c.shift_days % 7 == 0
    ahead = dt.timedelta(days=clocks.LIVE_DAYS_AHEAD)
    assert yesterday + ahead <= c.last_source_day < yesterday + ahead + dt.timedelta(days=7)
    assert c.first_day < yesterday - dt.timedelta(days=150)  # and half a year of history behind
    assert c.first_day.isoweekday() == dt.date(2013, 1, 1).isoweekday()  # weekdays keep their meaning
    assert c.source_day(c.first_day) == dt.date(2013, 1, 1)
    assert "live" in c.describe(yesterday) and str(c.source_day(yesterday)) in c.describe(yesterday)
    assert "2013 replay" in clocks.REPLAY_CLOCK.describe(dt.date(2013, 3, 1))
    with pytest.raises(ValueError):
        clocks.DataClock(clocks.LIVE, 10)  # not whole weeks


def test_a_data_dir_keeps_its_clock(tmp_path):
    path = tmp_path / "clock.json"
    live = clocks.live_clock_for(dt.date(2026, 11, 29))
    assert clocks.current_clock(path) == clocks.REPLAY_CLOCK
    clocks.record_clock(path, live)
    clocks.record_clock(path, live)  # the same clock again is fine
    assert clocks.current_clock(path) == live
    with pytest.raises(clocks.ClockMismatch, match="would mix clocks"):
        clocks.record_clock(path, clocks.REPLAY_CLOCK)
    assert json.loads(path.read_text())["first_day"] == live.first_day.isoformat()


# --------------------------------------------------------------------------------------------------- partitions

_PARTITIONS = """
import json
from batch_platform.definitions import defs
import dagster as dg
d = defs()
pdef = d.get_assets_def(dg.AssetKey(["raw", "flights"])).partitions_def
score = d.get_assets_def(dg.AssetKey(["flight_delay_predictions"])).partitions_def
keys = pdef.get_partition_keys()
print(json.dumps({"first": keys[0], "last": keys[-1], "n": len(keys),
                  "score_last": score.get_partition_keys()[-1]}))
"""


def _partition_keys(data_dir: Path) -> dict:
    env = {**os.environ, settings.DATA_DIR_VAR: str(data_dir)}
    for var in (settings.WAREHOUSE_VAR, settings.LANDING_VAR, settings.FEATURES_VAR, settings.GENERATIONS_VAR,
                settings.PREDICTIONS_EXPORT_VAR, settings.FEAST_REGISTRY_VAR,
                settings.ONLINE_STORE_VAR, settings.ARTIFACTS_VAR, settings.REGISTRY_VAR, settings.QUARANTINE_VAR,
                settings.ARCHIVE_VAR):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", _PARTITIONS], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_definitions_partitions_follow_the_data_clock(tmp_path):
    """The Definitions, loaded as the UI loads them, for a 2013 replay data dir and for a live one."""
    replay_keys = _partition_keys(tmp_path / "replay")
    assert (replay_keys["first"], replay_keys["last"], replay_keys["n"]) == ("2013-01-01", "2013-12-31", 365)

    live_dir = tmp_path / "live"
    tm = load_time_model()
    now = dt.datetime.now(UTC)
    live = clocks.record_clock(live_dir / settings.CLOCK_FILE,
                               clocks.live_clock_for(tm.last_published_day("flights", now)))
    live_keys = _partition_keys(live_dir)
    today_ny = dt.datetime.now(UTC).astimezone(tm.tz).date()
    assert live_keys["first"] == live.first_day.isoformat()
    # no fixed end: the partitions reach tomorrow (New York), the day scored this evening
    assert live_keys["last"] in {(today_ny + dt.timedelta(days=1)).isoformat(),
                                 (dt.datetime.now(UTC).astimezone(tm.tz).date() + dt.timedelta(days=1)).isoformat()}
    assert live_keys["score_last"] == live_keys["last"]
    # half a year of history behind (the other half is published day by day, see clocks.LIVE_DAYS_AHEAD)
    assert live.first_day <= dt.date.fromisoformat(live_keys["last"]) - dt.timedelta(days=150)
