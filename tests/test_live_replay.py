"""Live replay: the shipped data re-dated onto the live clock and published day by day, as upstream would.

Every morning at 06:00 New York the previous day's flights and weather and the next day's schedule are published
(the time model); the test lands them with ``published_by`` = that instant and ingests them with the same ``now``
(ingest refuses a batch published later), rebuilds the dbt features from what is loaded, and at 18:00 scores
tomorrow's flights (flight day D+1 at D's prediction cutoff) with only what was published by then.

Here the weather feed's manifests claim publication at 17:30 while the batches actually arrive at 18:30, after
scoring: features valid one hour too early. The publication-time check cannot see that (the manifests lie), the
training set's skew check does. (That honest live days show 0 mismatched rows is asserted by the daily-cycle
simulation, ``tests/daily_cycle.py``, which runs the same days through Dagster's automation.)
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import dagster as dg
import pytest
import yaml

from batch_platform import settings
from batch_platform.lib import clock as clocks
from batch_platform.lib import scoring, warehouse
from batch_platform.lib.contracts import CONTRACTS, REFERENCE_CONTRACTS
from batch_platform.lib.ingest import ingest_many
from batch_platform.lib.landing import daily_batch_path, manifest_path, reference_batch_path, replay
from batch_platform.lib.time_model import load_time_model
from tests.conftest import platform_env_vars, project_storage, write_test_specs

HISTORY = (dt.date(2013, 1, 1), dt.date(2013, 1, 24))  # source days loaded before the live days
HONEST_DAYS = 3  # mornings published one by one; each evening scores the next day
LYING_DAYS = 3
SPECS = ("flight_delay", "flight_cancellation")
SKEW_CHECK = "training_serving_skew"


class Timeline:
    """A platform on the live clock, driven through simulated days."""

    def __init__(self, base: Path, instance: dg.DagsterInstance):
        self.tm = load_time_model()
        now = dt.datetime.now(dt.UTC)
        self.clock = clocks.live_clock_for(self.tm.last_published_day("flights", now))
        self.env = platform_env_vars(base)
        write_test_specs(self.env["BATCH_PLATFORM_MODEL_SPECS"])
        for path in Path(self.env["BATCH_PLATFORM_MODEL_SPECS"]).glob("*.yaml"):
            if path.stem not in SPECS:
                path.unlink()
                continue
            # the test needs a champion to score with, not a good one (18 days of history)
            raw = yaml.safe_load(path.read_text())
            raw["gate"]["floor"] = 0.0
            path.write_text(yaml.safe_dump(raw))
        self.instance = instance
        self.landing = self.env[settings.LANDING_VAR]
        self.db = self.env[settings.WAREHOUSE_VAR]
        self.defs = None
        self.scored: list[dt.date] = []
        self.schedules: set[dt.date] = set()
        self.today: dt.date | None = None

    # -- clock ----------------------------------------------------------------------------------------------
    def at(self, day: dt.date, hhmm: str) -> dt.datetime:
        local = dt.datetime.combine(day, dt.time.fromisoformat(hhmm), self.tm.tz)
        return local.astimezone(dt.UTC)

    def day(self, source_day: dt.date) -> dt.date:
        return self.clock.shifted(source_day)

    # -- steps ----------------------------------------------------------------------------------------------
    def publish_and_ingest(self, first: dt.date, last: dt.date, now: dt.datetime, *,
                           schedule_through: dt.date, tables=("flights", "weather"), skip=()) -> None:
        """Land flight days ``first..last`` and schedules through ``schedule_through`` as published by ``now``, then
        ingest the daily batches of those days (and the references once) with ingest's clock at ``now``."""
        replay(self.landing, first, last, clock=self.clock, schedule_through=schedule_through, published_by=now)
        batches = []
        if not self.db.exists():
            batches += [(c, reference_batch_path(self.landing, c.table), None) for c in REFERENCE_CONTRACTS]
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        batches += [(CONTRACTS[t], daily_batch_path(self.landing, t, d), d) for d in days for t in tables
                    if (t, d) not in skip]
        new_schedules = [d for d in _days(first, schedule_through) if d not in self.schedules]
        batches += [(CONTRACTS["flight_schedule"], daily_batch_path(self.landing, "flight_schedule", d), d)
                    for d in new_schedules]
        ingest_many(self.db, batches, quarantine_dir=self.env[settings.QUARANTINE_VAR], clock=self.clock, now=now)
        self.schedules.update(new_schedules)

    def ingest(self, table: str, day: dt.date, now: dt.datetime) -> None:
        ingest_many(self.db, [(CONTRACTS[table], daily_batch_path(self.landing, table, day), day)],
                    quarantine_dir=self.env[settings.QUARANTINE_VAR], clock=self.clock, now=now)

    def dbt_run(self) -> None:
        """Rebuild the feature marts and frames from what is loaded now (models only; the tests run elsewhere)."""
        dbt = Path(sys.executable).parent / "dbt"
        out = subprocess.run(
            [str(dbt), "run", "--project-dir", str(settings.DBT_PROJECT_DIR), "--profiles-dir",
             str(settings.DBT_PROJECT_DIR), "--target-path", str(self.env[settings.DATA_DIR_VAR] / "dbt_target"),
             "--log-path", str(self.env[settings.DATA_DIR_VAR] / "dbt_logs"), "--threads", "2", "--quiet"],
            capture_output=True, text=True, env={**_environ(), **{k: str(v) for k, v in self.env.items()}})
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def run_job(self, name: str, selection=None) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance, raise_on_error=False, asset_selection=selection)
        return result

    def score(self, day: dt.date) -> None:
        """Score ``day`` at its prediction cutoff with every spec's champion (the scoring stage's own function)."""
        from batch_platform.lib.feature_store import FeatureStoreClient
        from batch_platform.lib.registry import ModelRegistry
        from batch_platform.lib.specs import load_specs

        client = FeatureStoreClient()
        registry = ModelRegistry(self.env[settings.REGISTRY_VAR])
        for spec in load_specs().values():
            scoring.score_partition(
                spec=spec, day=day, connect=partial(warehouse.connect, self.db), feature_store=client,
                registry=registry, staging_dir=self.env[settings.ARTIFACTS_VAR] / "scoring_staging",
                scored_at=spec.prediction_cutoff(day))
        self.scored.append(day)

    def live_day(self, today: dt.date, *, lying_weather: bool = False) -> None:
        """One day: the morning publication (yesterday's flights and weather, tomorrow's schedule), features, and
        the evening scoring of tomorrow. ``lying_weather``: yesterday's weather batch claims 17:30 in its manifest
        but arrives at 18:30, after scoring."""
        yesterday, tomorrow = today - dt.timedelta(days=1), today + dt.timedelta(days=1)
        morning = self.at(today, "06:05")
        late_weather = {("weather", yesterday)} if lying_weather else set()
        self.publish_and_ingest(yesterday, yesterday, morning, schedule_through=tomorrow, skip=late_weather)
        self.dbt_run()
        self.score(tomorrow)
        if lying_weather:
            path = manifest_path(daily_batch_path(self.landing, "weather", yesterday))
            manifest = json.loads(path.read_text())
            manifest["published_at"] = self.at(today, "17:30").isoformat()
            path.write_text(json.dumps(manifest))
            self.ingest("weather", yesterday, self.at(today, "18:30"))
        self.today = today

    def training_sets(self) -> dict[str, dg.AssetCheckEvaluation]:
        """Materialize every spec's training set at the newest publication; return its skew check evaluations."""
        from batch_platform.defs.training.assets import training_set_key

        self.dbt_run()
        keys = [training_set_key(s) for s in self._specs()]
        result = self.run_job("train_gate_promote", selection=keys)
        evaluations = {e.asset_key.path[0].removesuffix("_training_set"): e
                       for e in result.get_asset_check_evaluations() if e.check_name == SKEW_CHECK}
        assert evaluations, [e.message for e in result.all_events if e.is_failure]
        return evaluations

    def _specs(self):
        from batch_platform.lib.specs import load_specs

        return load_specs().values()


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture(scope="module")
def timeline(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    with dg.instance_for_test(overrides=project_storage()) as instance, pytest.MonkeyPatch.context() as mp:
        t = Timeline(base, instance)
        for k, v in t.env.items():
            mp.setenv(k, str(v))
        clocks.record_clock(settings.clock_path(), t.clock)
        first, last = t.day(HISTORY[0]), t.day(HISTORY[1])
        t.publish_and_ingest(first, last, t.at(last + dt.timedelta(days=1), "06:05"),
                             schedule_through=last + dt.timedelta(days=2))
        from batch_platform.definitions import defs as lazy_defs

        t.defs = lazy_defs()
        features = t.run_job("build_features")
        assert features.success, [e.message for e in features.all_events if e.is_failure]
        train = t.run_job("train_gate_promote")
        assert train.success, [e.message for e in train.all_events if e.is_failure]
        yield t


def test_a_feature_valid_one_hour_before_it_arrives_is_caught(timeline):
    t = timeline
    start = t.day(HISTORY[1]) + dt.timedelta(days=1)
    for today in _days(start, start + dt.timedelta(days=HONEST_DAYS - 1)):  # scored honestly first
        t.live_day(today)
    start = t.today + dt.timedelta(days=1)
    for today in _days(start, start + dt.timedelta(days=LYING_DAYS - 1)):
        t.live_day(today, lying_weather=True)
    # two more honest mornings so the lied-about days' labels are final by the training cutoff
    for today in _days(t.today + dt.timedelta(days=1), t.today + dt.timedelta(days=2)):
        t.live_day(today)
    evaluations = t.training_sets()
    for spec, ev in evaluations.items():
        meta = {k: v.value for k, v in ev.metadata.items()}
        assert not ev.passed, (spec, ev.description)
        assert meta["rows_mismatched"] > 0
        assert any(c.startswith("wx_") for c in meta["columns"]), meta["columns"]
        assert not any(c.startswith(("plane_", "route_", "carrier_")) for c in meta["columns"]), meta["columns"]
