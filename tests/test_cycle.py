"""Which partition of a time-driven stage is due at an instant (lib/cycle.py), on the shipped specs' rules."""

import datetime as dt
from zoneinfo import ZoneInfo

from batch_platform.lib import cycle
from batch_platform.lib.specs import load_specs

NY = ZoneInfo("America/New_York")


def at(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NY).astimezone(dt.UTC)


def test_predictions_of_tomorrow_are_due_from_the_cutoff_until_the_day_begins():
    spec = load_specs()["flight_delay"]  # cutoff 1 day before, 18:00
    assert cycle.prediction_due_day(spec, at("2026-03-10", "17:59")) is None
    assert cycle.prediction_due_day(spec, at("2026-03-10", "18:00")) == dt.date(2026, 3, 11)
    assert cycle.prediction_due_day(spec, at("2026-03-10", "23:59")) == dt.date(2026, 3, 11)
    assert cycle.prediction_due_day(spec, at("2026-03-11", "00:00")) is None  # being flown: never re-scored
    assert cycle.prediction_due_day(spec, at("2026-03-11", "12:00")) is None
    # across the DST change (2026-03-08 02:00 New York) the window stays 18:00 .. midnight local
    assert cycle.prediction_due_day(spec, at("2026-03-07", "18:30")) == dt.date(2026, 3, 8)


def test_a_same_day_cutoff_is_due_until_the_next_cutoff():
    shipped = load_specs()["flight_delay"]
    spec = shipped.model_copy(update={"cutoff": shipped.cutoff.model_copy(update={"days_before": 0,
                                                                                  "local_time": "04:00"})})
    assert cycle.prediction_due_day(spec, at("2026-03-10", "03:59")) == dt.date(2026, 3, 9)
    assert cycle.prediction_due_day(spec, at("2026-03-10", "04:00")) == dt.date(2026, 3, 10)


def test_accuracy_is_due_for_the_newest_day_with_final_labels():
    spec = load_specs()["flight_delay"]  # labels final 2 days after, 06:00
    assert cycle.accuracy_due_day(spec, at("2026-03-10", "05:59")) == dt.date(2026, 3, 7)
    assert cycle.accuracy_due_day(spec, at("2026-03-10", "06:00")) == dt.date(2026, 3, 8)
    assert cycle.accuracy_due_day(spec, at("2026-03-10", "23:00")) == dt.date(2026, 3, 8)


def test_cron_at_local_time():
    assert cycle.cron_at("06:00") == "0 6 * * *" and cycle.cron_at("18:30") == "30 18 * * *"
