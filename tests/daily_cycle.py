"""The daily cycle on the live clock, driven by Dagster's own evaluation APIs at explicit times (run by
``tests/test_daily_cycle.py`` in a process of its own: partitions follow the data dir's clock at import).

The process's clock is moved with ``time-machine`` to each simulated instant; at each one the test publishes what
upstream would (a live replay: ``lib.landing.replay(published_by=now)``), evaluates the arrival sensor, the
automation conditions (``evaluate_automation_conditions`` with that evaluation time) or the retrain sensor, asserts
that exactly the due runs are requested, and executes them in-process against one instance. Freshness states are
computed by Dagster's own freshness evaluators at that instant.

Timeline: a catch-up of the history (one backfill), the first champion, then ``LIVE_DAYS`` days: every morning
yesterday's flights and weather and tomorrow's schedule land at 06:05; features follow; the accuracy of the day whose
labels became final; every evening at 18:05 the predictions of tomorrow. One morning the weather batch is withheld
until 10:00 (raw freshness FAIL, then PASS); three days' schedules arrive with their distances shifted (a drift
episode → exactly one retrain request per spec, whose training sets find 0 rows where scoring served other feature
values than training sees). The retrain's candidates take the promotion lifecycle on the live clock: in ``SHADOWED``
specs a passed gate makes the candidate the challenger, scored in shadow every evening and judged every morning by
the ``promotion_lifecycle`` sensor's run until its comparison on final labels decides (or it expires); the other specs
promote on the gate, and then the scoring rows of four evenings are misaligned on purpose (a broken feed no drift test
sees): the rollback watch restores the previous champion within its window, and the next evening is scored by it.
The judgement of that rollback's first chance is the real daemon's (``dagster-daemon run`` on the cycle's instance,
its clock at the cycle's): the ``promotion_lifecycle`` sensor's tick, the queued run and the run worker's rollback.
Exits non-zero with a message on the first broken expectation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import time_machine
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

from batch_platform import settings
from batch_platform.lib.landing import daily_batch_path, manifest_path, replay
from batch_platform.lib.time_model import load_time_model

HISTORY_DAYS = 50  # flight days published before the first live morning
LIVE_DAYS = 15
WITHHELD_DAY = 5  # live day index whose morning weather batch is withheld until 10:00
DRIFT_DAYS = (7, 8, 9)  # live day indexes whose published schedule (tomorrow's) has shifted distances
SPECS = ("flight_delay", "flight_cancellation")
SHADOWED = ("flight_cancellation",)  # their challengers shadow SHADOW_MIN_DAYS days; the others promote on the gate
SHADOW_MIN_DAYS, SHADOW_MAX_DAYS = 2, 5
BROKEN_EVENINGS = (9, 10, 11, 12)  # live day indexes at whose 18:00 tomorrow's scoring rows are misaligned
ROLLBACK_BY = 14  # live day index by whose lifecycle tick a champion promoted on its gate then is rolled back
# The lifecycle judgement of the first morning on which a champion promoted on its gate has rollback_min_days
# served days with final labels (its first chance of a rollback) is made by the real Dagster daemon: the sensor's
# tick, the queued run, the run worker's rollback (sha256, smoke score). The harness keeps driving the other
# sensors (their cursors are its own), so they are paused in the instance for the daemon, as the UI's switch does.
HARNESS_SENSORS = ("landing_arrivals", "daily_cycle_automation", "retrain_on_drift")
DAEMON_TIMEOUT_S = 420
ROOT = Path(__file__).resolve().parent.parent
SHIFT_VAR = "BATCH_PLATFORM_TEST_CLOCK_SHIFT_S"  # tests/clock_shift: the daemon's processes run on the cycle's clock
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Expectation(AssertionError):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise Expectation(message)


class Cycle:
    def __init__(self, instance: dg.DagsterInstance, first_live_day: dt.date):
        from batch_platform.definitions import defs as lazy_defs

        self.tm = load_time_model()
        self.clock = settings.data_clock()
        self.instance = instance
        self.defs = lazy_defs()
        self.graph = self.defs.resolve_asset_graph()
        self.repo = self.defs.get_repository_def()
        self.landing = settings.landing_dir()
        self.first_live_day = first_live_day
        self.arrival_cursor: str | None = None
        self.retrain_cursor: str | None = None
        self.automation_cursor = None
        self.now: dt.datetime | None = None
        self.traveller = None
        self.log: list[str] = []
        self.retrain_requests: Counter = Counter()
        self.promoted: dict[str, dt.date] = {}  # spec -> the day its champion moved by a promotion
        self.replaced: dict[str, int] = {}  # spec -> the champion its last promotion replaced (a rollback's target)
        self.gate_promoted: set[str] = set()  # specs whose drift retrain was promoted on its gate
        self.rolled_back: dict[str, dt.date] = {}
        self.challengers: dict[str, int] = {}  # spec -> its challenger in shadow
        self.decided: dict[str, str] = {}  # spec -> how its challenger's shadow ended (promote | withdraw)
        self.daemon_judged: dt.date | None = None  # the morning whose lifecycle judgement was the daemon's
        self.last_automation = None
        self.timings: Counter = Counter()
        self.skew_checks: list = []
        self.shifted: set[dt.date] = set()
        self.originals: dict[dt.date, bytes] = {}

    # -- time -----------------------------------------------------------------------------------------------
    def at(self, day: dt.date, hhmm: str) -> dt.datetime:
        return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), self.tm.tz).astimezone(dt.UTC)

    def move_to(self, when: dt.datetime) -> None:
        self.now = when
        self.traveller.move_to(when)

    def say(self, text: str) -> None:
        line = f"[{self.now.astimezone(self.tm.tz):%Y-%m-%d %H:%M}] {text}"
        self.log.append(line)
        print(line, flush=True)

    # -- upstream -------------------------------------------------------------------------------------------
    def publish(self, first: dt.date, last: dt.date, *, schedule_through: dt.date, tables=None) -> None:
        replay(self.landing, first, last, clock=self.clock, schedule_through=schedule_through,
               published_by=self.now, tables=tables)
        for day in self.shifted:  # the replay re-lands recent schedules as the source has them: keep upstream's
            if first <= day <= schedule_through:  # shifted version (same bytes: not a correction)
                self.shift_distances(day)

    def withdraw(self, table: str, day: dt.date) -> None:
        path = daily_batch_path(self.landing, table, day)
        manifest_path(path).unlink()
        path.unlink()

    def shift_distances(self, day: dt.date, miles: int = 3000) -> None:
        """Upstream starts reporting distances ``miles`` longer in the schedule of ``day`` (a broken unit)."""
        self.shifted.add(day)
        path = daily_batch_path(self.landing, "flight_schedule", day)
        original = self.originals.setdefault(day, path.read_bytes())
        lines = original.decode().splitlines()
        header = lines[0].split(",")
        col = header.index("distance")
        out = [lines[0]]
        for line in lines[1:]:
            cells = line.split(",")
            if cells[col]:
                cells[col] = str(int(cells[col]) + miles)
            out.append(",".join(cells))
        data = ("\n".join(out) + "\n").encode()
        path.write_bytes(data)
        m = json.loads(manifest_path(path).read_text())
        m["sha256"] = hashlib.sha256(data).hexdigest()
        manifest_path(path).write_text(json.dumps(m))

    # -- Dagster ---------------------------------------------------------------------------------------------
    def _tick_sensor(self, name: str, cursor: str | None):
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, resources=self.defs.resources,
                                     repository_def=self.repo) as ctx:
            return self.defs.resolve_sensor_def(name).evaluate_tick(ctx)

    def tick_arrivals(self) -> list[dg.RunRequest]:
        data = self._tick_sensor("landing_arrivals", self.arrival_cursor)
        self.arrival_cursor = data.cursor
        return list(data.run_requests or [])

    def tick_retrain(self) -> list[dg.RunRequest]:
        data = self._tick_sensor("retrain_on_drift", self.retrain_cursor)
        self.retrain_cursor = data.cursor
        for r in data.run_requests or []:
            self.retrain_requests[r.tags["batch_platform/retrain_spec"]] += 1
        return list(data.run_requests or [])

    def tick_lifecycle(self) -> list[dg.RunRequest]:
        return list(self._tick_sensor("promotion_lifecycle", None).run_requests or [])

    def tick_automation(self) -> list[dg.RunRequest]:
        started = time.perf_counter()
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                   evaluation_time=self.now, cursor=self.automation_cursor)
        self.timings["automation evaluation"] += time.perf_counter() - started
        self.automation_cursor = result.cursor
        self.last_automation = result
        # grouped into runs as the automation sensor groups them (one run per partition key)
        return list(build_run_requests(entity_subsets=result._requested_subsets, asset_graph=self.graph,
                                       run_tags={}, emit_backfills=False))

    def execute(self, request: dg.RunRequest, *, gate_may_fail: bool = False) -> dg.ExecuteInProcessResult | None:
        """Run ``request`` in-process as the daemon would launch it (its assets, and its checks when it names
        them). ``gate_may_fail``: a retrain's candidate may fail its gate (the run fails, nothing is promoted)."""
        if request.asset_graph_subset is not None:
            self._execute_backfill(request)
            return None
        job = (self.defs.resolve_job_def(request.job_name) if request.job_name
               else self.defs.resolve_implicit_global_asset_job_def())
        if request.asset_check_keys is not None:
            job = job.get_subset(asset_selection=set(request.asset_selection or []),
                                 asset_check_selection=set(request.asset_check_keys))
        result = job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, raise_on_error=False,
            asset_selection=list(request.asset_selection) if request.asset_selection and
            request.asset_check_keys is None else None,
            tags=dict(request.tags or {}), run_config=QUIET)
        failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
        gate_only = gate_may_fail and failed_steps and all(k.endswith("_gate_vs_champion") for k in failed_steps)
        expect(result.success or gate_only, f"run of {describe(request)} failed: "
               f"{[e.message for e in result.all_events if e.is_failure][:3]}")
        for ev in result.get_asset_check_evaluations():
            if ev.check_name == "training_serving_skew":
                self.skew_checks.append(ev)
            if ev.check_name in ("feature_drift", "gate_vs_champion", "training_serving_skew"):
                self.say(f"  {ev.asset_key.to_user_string()} {ev.check_name} "
                         f"{'passed' if ev.passed else 'FAILED'}: {(ev.description or '')[:160]}")
        return result

    def _execute_backfill(self, request: dg.RunRequest) -> None:
        """What the backfill daemon does with the raw assets' single-run policy: one run per asset over its range
        (assets with the same range share a run), unpartitioned assets in a run of their own."""
        subset = request.asset_graph_subset
        by_range: dict[tuple[str, str], list[dg.AssetKey]] = {}
        for key, parts in subset.partitions_subsets_by_asset_key.items():
            keys = sorted(parts.get_partition_keys())
            by_range.setdefault((keys[0], keys[-1]), []).append(key)
            expect(len(keys) == (dt.date.fromisoformat(keys[-1]) - dt.date.fromisoformat(keys[0])).days + 1,
                   f"catch-up of {key.to_user_string()} is not one contiguous range: {keys}")
        job = self.defs.resolve_implicit_global_asset_job_def()
        runs = [(None, sorted(subset.non_partitioned_asset_keys))] if subset.non_partitioned_asset_keys else []
        runs += [(rng, keys) for rng, keys in sorted(by_range.items())]
        for rng, keys in runs:
            tags = dict(request.tags or {})
            if rng:
                tags |= {"dagster/asset_partition_range_start": rng[0], "dagster/asset_partition_range_end": rng[1]}
            result = job.execute_in_process(instance=self.instance, asset_selection=keys, tags=tags,
                                            raise_on_error=False, run_config=QUIET)
            expect(result.success, f"catch-up run {rng} {keys} failed: "
                   f"{[e.message for e in result.all_events if e.is_failure][:3]}")

    def freshness(self) -> dict[str, str]:
        """Every asset with a freshness policy -> its state now, by Dagster's own evaluators."""
        from dagster._core.definitions.freshness_evaluator import FRESHNESS_EVALUATORS_BY_POLICY_TYPE
        from dagster._core.loader import LoadingContext

        instance = self.instance

        class Context(LoadingContext):
            def __init__(self):
                self._loaders = {}

            @property
            def instance(self):
                return instance

            @property
            def loaders(self):
                return self._loaders

        async def states():
            ctx = Context()
            out = {}
            for node in self.graph.asset_nodes:
                policy = node.freshness_policy
                if policy is None:
                    continue
                evaluator = FRESHNESS_EVALUATORS_BY_POLICY_TYPE[type(policy)]()
                out[node.key.to_user_string()] = (await evaluator.evaluate_freshness(ctx, node)).value
            return out

        return asyncio.run(states())

    def explain(self, key: str) -> str:
        """Why the last automation tick did (not) request ``key``: its condition tree with true-subset sizes."""
        lines = []

        def walk(r, depth):
            label = r.condition.get_label() or r.condition.name
            lines.append(f"{'  ' * depth}{label}: {r.true_subset.size}")
            for child in r.child_results:
                walk(child, depth + 1)

        for r in self.last_automation.results:
            if r.key.to_user_string() == key:
                walk(r, 0)
        return "\n".join(lines)

    def run_due(self, requests: list[dg.RunRequest], expected: set[str] | None, what: str) -> None:
        """Execute ``requests`` after checking they are exactly ``expected`` (None: checked by the caller)."""
        got = {describe(r) for r in requests}
        if expected is not None:
            if got != expected and self.last_automation is not None:
                for key in sorted({n for e in expected ^ got for n in e.split(":", 1)[1].split(",")}):
                    print(f"--- {key}\n{self.explain(key)}", flush=True)
            expect(got == expected, f"{what}: requested {sorted(got)}, expected {sorted(expected)}")
        for r in requests:
            started = time.perf_counter()
            self.execute(r)
            self.timings[what.split()[0]] += time.perf_counter() - started
            self.say(f"{what}: ran {describe(r)[:160]} ({time.perf_counter() - started:.1f} s)")


def describe(request: dg.RunRequest) -> str:
    """A run request as '<partition or range>:<asset names>' (what it would materialize)."""
    if request.asset_graph_subset is not None:
        s = request.asset_graph_subset
        parts = [f"{k.to_user_string()}[{len(p.get_partition_keys())}]"
                 for k, p in sorted(s.partitions_subsets_by_asset_key.items())]
        parts += [k.to_user_string() for k in sorted(s.non_partitioned_asset_keys)]
        return "backfill:" + ",".join(parts)
    names = sorted(k.to_user_string() for k in request.asset_selection or [])
    return f"{request.partition_key or '-'}:{','.join(names)}"


def stage_of(name: str) -> str:
    if name.startswith(("staging/", "intermediate/", "marts/", "seeds/", "feast/")):
        return "features"
    return name


MORNING_BUILD = ("marts/plane_daily_features", "marts/flight_schedule", "marts/flight_labels",
                 "feast/feature_definitions", "feast/online_store")
WEATHER_BUILD = ("marts/origin_weather_features", "feast/feature_definitions", "feast/online_store")


def features_request(requests: list[dg.RunRequest], what: str, also: set[str] = frozenset(),
                     must: tuple[str, ...] = MORNING_BUILD) -> list[dg.RunRequest]:
    """A feature build: one unpartitioned run of dbt models + Feast (+ ``also``) rebuilding ``must``, nothing
    else."""
    expect(len(requests) == 1 and requests[0].partition_key is None, f"{what}: expected one feature run, got "
           f"{[describe(r) for r in requests]}")
    names = {k.to_user_string() for k in requests[0].asset_selection}
    expect({stage_of(n) for n in names - also} == {"features"} and also <= names,
           f"{what}: not features (and {sorted(also)}) only: {sorted(names)}")
    for key in must:
        expect(key in names, f"{what}: {key} not rebuilt ({sorted(names)})")
    return requests


def predictions(day: dt.date) -> str:
    return f"{day}:" + ",".join(sorted(f"{s}_predictions" for s in SPECS))


def accuracy(day: dt.date) -> str:
    return f"{day}:" + ",".join(sorted(f"{s}_production_accuracy" for s in SPECS))


def slis(day: dt.date) -> str:
    return f"{day}:" + ",".join(sorted(f"{s}_operational_slis" for s in SPECS))


def morning(c: Cycle, i: int, day: dt.date) -> None:
    one = dt.timedelta(days=1)
    yesterday, tomorrow = day - one, day + one
    withheld = i == WITHHELD_DAY
    c.move_to(c.at(day, "06:05"))
    c.publish(yesterday, yesterday, schedule_through=tomorrow)
    if withheld:
        c.withdraw("weather", yesterday)
    if i in DRIFT_DAYS:
        c.shift_distances(tomorrow)
    raw_yesterday = "raw/flights" if withheld else "raw/flights,raw/weather"
    c.run_due(c.tick_arrivals(), {f"{yesterday}:{raw_yesterday}", f"{tomorrow}:raw/flight_schedule"},
              "arrivals 06:05")
    c.move_to(c.at(day, "06:15"))
    c.run_due(features_request(c.tick_automation(), "06:15"), None, "automation 06:15")
    c.move_to(c.at(day, "06:30"))
    final = day - 2 * one  # labels final at D+2 06:00; scored the evening before D (from the first live day on)
    c.run_due(c.tick_automation(), {accuracy(final)} if final > c.first_live_day else set(), "automation 06:30")
    if withheld:
        c.move_to(c.at(day, "08:05"))
        states = c.freshness()
        expect(states["raw/weather"] == "FAIL", f"withheld weather: freshness {states['raw/weather']}")
        expect(states["raw/flights"] == "PASS", f"flights freshness {states['raw/flights']}")
        c.say("08:05 raw/weather freshness FAIL (its batch is withheld)")
    # yesterday's operational SLIs, once the morning's loads are due (publication + the 2 h service level)
    c.move_to(c.at(day, "08:30"))
    c.run_due(c.tick_automation(), {slis(yesterday)}, "automation 08:30")
    # one lifecycle judgement per morning's label build, for every spec with a challenger in shadow or a champion
    # promoted over another within its rollback window (7 days)
    c.move_to(c.at(day, "08:40"))
    lifecycle_morning(c, i, day)
    if withheld:
        c.move_to(c.at(day, "10:00"))
        c.publish(yesterday, yesterday, schedule_through=tomorrow, tables=["weather"])
        c.run_due(c.tick_arrivals(), {f"{yesterday}:raw/weather"}, "arrivals 10:00")
        c.move_to(c.at(day, "10:05"))
        expect(c.freshness()["raw/weather"] == "PASS", "late weather loaded: freshness still not PASS")
        c.say("10:05 raw/weather freshness PASS again")
        c.move_to(c.at(day, "10:10"))
        # only what reads the weather is rebuilt
        requests = features_request(c.tick_automation(), "10:10", must=WEATHER_BUILD)
        names = {k.to_user_string() for k in requests[0].asset_selection}
        expect("marts/flight_schedule" not in names, f"10:10: a late weather batch rebuilt {sorted(names)}")
        c.run_due(requests, None, "automation 10:10")


def lifecycle_morning(c: Cycle, i: int, day: dt.date) -> None:
    """The 08:40 tick of ``promotion_lifecycle``: exactly the specs with something to judge are requested; each
    champion moves only as its evidence says (a shadow comparison confirmed on final labels, or a rollback)."""
    from batch_platform.lib import model_ops
    from batch_platform.lib.registry import ModelRegistry
    from batch_platform.lib.specs import load_specs

    registry = ModelRegistry(settings.registry_path())
    watched = {s for s, d in c.promoted.items() if 1 <= (day - d).days <= 7}
    due = sorted(watched | set(c.challengers))
    before = {s: registry.get_alias(s, model_ops.CHAMPION).version for s in SPECS}
    logged = {s: len(registry.alias_history(s)) for s in SPECS}
    expected = {f"-:{s}_champion_model" for s in due}
    first_chance = {s for s in watched & c.gate_promoted
                    if (day - c.promoted[s]).days == 2 + load_specs()[s].promotion.rollback_min_days}
    if first_chance and c.daemon_judged is None:
        judged_by_daemon(c, expected)
        c.daemon_judged = day
    else:
        c.run_due(c.tick_lifecycle(), expected, "promotion_lifecycle 08:40")
    for s in SPECS:
        after = registry.get_alias(s, model_ops.CHAMPION).version
        moves = [e for e in registry.alias_history(s)[logged[s]:] if e.alias == model_ops.CHAMPION]
        expect(s in due or not moves, f"08:40: {s} moved without a judgement: {moves}")
        if s in c.challengers and registry.get_alias(s, model_ops.CHALLENGER) is None:
            ended = registry.alias_history(s, model_ops.CHALLENGER)[-1]
            action = "promote" if moves else "withdraw"
            evidence = (moves[-1].evidence if moves else ended.evidence) or {}
            comparison = evidence.get("comparison") or {}
            final = [d for d in comparison.get("days", []) if dt.date.fromisoformat(d) > day - dt.timedelta(days=2)]
            expect(not final, f"{s}: judged on days whose labels are not final at {day}: {final}")
            if action == "promote":
                expect(after == c.challengers[s] and comparison.get("verdict") == "confirmed"
                       and len(comparison["days"]) >= SHADOW_MIN_DAYS, f"{s}: promoted on {evidence}")
                c.promoted[s], c.replaced[s] = day, before[s]
            else:
                expect(after == before[s] and (comparison.get("verdict") == "refuted" or "expired" in ended.reason),
                       f"{s}: withdrawn on {ended.reason} {evidence}")
            c.decided[s] = action
            c.say(f"{s}: shadow ended: {action} v{c.challengers.pop(s)} ({ended.reason[:160]})")
        elif moves:
            (move,) = moves
            expect(s in watched and move.action == "rollback" and move.to_version == c.replaced.get(s),
                   f"08:40: {s} moved {move.action} {move.from_version} -> {move.to_version}: {move.reason}")
            evidence = move.evidence or {}
            expect(evidence["ci_high"] < evidence["previous_metric"], f"{s}: rolled back on {evidence}")
            c.rolled_back[s] = day
            c.promoted.pop(s)
            c.say(f"{s}: rolled back v{move.from_version} -> v{move.to_version} ({move.reason[:200]})")
        else:
            expect(after == before[s], f"08:40: {s}'s champion moved without a log entry")


def judged_by_daemon(c: Cycle, expected: set[str]) -> None:
    """This morning's lifecycle judgement, made by ``dagster-daemon run`` on the cycle's instance with its clock at
    the cycle's (``tests/clock_shift``): the ``promotion_lifecycle`` sensor must request exactly ``expected`` and
    its runs must succeed; then the daemon is stopped and the harness checks the moves as on any other morning."""
    from time_machine import escape_hatch

    from batch_platform.defs.registry.sensors import LIFECYCLE_SENSOR, TRIGGER

    workspace = daemon_workspace()
    before = {r.dagster_run.run_id for r in c.instance.get_run_records()}
    shift_s = (c.now - escape_hatch.datetime.datetime.now(dt.UTC)).total_seconds()
    log_path = Path(os.environ["DAGSTER_HOME"]) / "daemon.log"
    env = {**os.environ, SHIFT_VAR: str(shift_s),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "clock_shift"), str(ROOT)])}
    started = time.monotonic()
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            runs = [r.dagster_run for r in c.instance.get_run_records() if r.dagster_run.run_id not in before]
            done = [r for r in runs if r.is_finished]
            if len(done) >= len(expected) and len(done) == len(runs):
                break
            elapsed = time.monotonic() - started
            expect(daemon.poll() is None and elapsed < DAEMON_TIMEOUT_S,
                   f"the daemon's lifecycle tick: {len(done)} of {len(expected)} run(s) done after {elapsed:.0f} s "
                   f"(daemon {'exited' if daemon.poll() is not None else 'running'}); its log ends:\n"
                   + log_path.read_text()[-3000:])
            time.sleep(2)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(daemon.pid, sig)
                daemon.wait(timeout=30)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
    got = {"-:" + ",".join(sorted(k.to_user_string() for k in r.asset_selection or [])) for r in runs}
    expect(got == expected and all(r.tags.get(TRIGGER) == LIFECYCLE_SENSOR for r in runs),
           f"the daemon launched {sorted(got)} ({[r.tags for r in runs]}), expected {sorted(expected)}")
    failed = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    expect(not failed, f"the daemon's lifecycle run(s) failed: {failed}; its log ends:\n"
           + log_path.read_text()[-3000:])
    c.move_to(c.now + dt.timedelta(seconds=time.monotonic() - started))
    c.say(f"promotion_lifecycle 08:40 under the daemon: ran {sorted(got)} "
          f"({time.monotonic() - started:.0f} s from the daemon's start to its runs' end)")


def daemon_workspace() -> Path:
    """The daemon's workspace: the platform alone (the harness is its upstream)."""
    workspace = Path(os.environ["DAGSTER_HOME"]) / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: batch_platform.definitions\n"
                         "      location_name: batch_platform\n")
    return workspace


def pause_sensors(instance: dg.DagsterInstance, workspace: Path, names: tuple[str, ...]) -> None:
    """Stop ``names`` in ``instance`` as the UI's switch (or `dagster sensor stop`) does. On the real clock: the
    code server it starts is a gRPC server, whose deadlines a travelling client would put in the past."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace)])) as context:
        location = context.create_request_context().get_code_location("batch_platform")
        (repo,) = location.get_repositories().values()
        for name in names:
            sensor = repo.get_sensor(name)
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def check_served(c: Cycle, tomorrow: dt.date, specs=SPECS) -> None:
    """Tomorrow's predictions are the champion's; a challenger's scores are in the shadow table, never served."""
    from batch_platform.lib import model_ops
    from batch_platform.lib.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_path())
    for s in specs:
        event = c.instance.get_latest_materialization_event(dg.AssetKey([f"{s}_predictions"]))
        md = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        champion = registry.get_alias(s, model_ops.CHAMPION).version
        expect(event.asset_materialization.partition == tomorrow.isoformat() and md["model_version"] == champion,
               f"{s} {tomorrow}: served by v{md['model_version']}, the champion is v{champion}")
        expect(md["shadow_version"] == c.challengers.get(s, 0),
               f"{s} {tomorrow}: shadow v{md['shadow_version']}, the challenger is {c.challengers.get(s)}")


def evening(c: Cycle, i: int, day: dt.date) -> None:
    from batch_platform.lib import model_ops
    from batch_platform.lib.registry import ModelRegistry

    tomorrow = day + dt.timedelta(days=1)
    quiet_ticks = i < 3 or i in DRIFT_DAYS  # ticks that must request nothing, on some days (each costs ~1.5 s)
    if quiet_ticks:
        c.move_to(c.at(day, "17:55"))
        c.run_due(c.tick_automation(), set(), "automation 17:55 (before the cutoff)")
    if i in BROKEN_EVENINGS:
        c.move_to(c.at(day, "18:00"))
        from batch_platform.lib import warehouse
        from batch_platform.lib.specs import load_specs
        from tests.broken_feed import misalign_scoring_rows

        with warehouse.connect(settings.warehouse_path()) as con:
            rows = misalign_scoring_rows(con, load_specs()[SPECS[0]], [tomorrow])  # (the specs score one model)
        c.say(f"18:00 the scoring rows of {tomorrow} are misaligned on purpose ({rows} rows)")
    c.move_to(c.at(day, "18:05"))
    c.run_due(c.tick_automation(), {predictions(tomorrow)}, "automation 18:05")
    check_served(c, tomorrow)
    if quiet_ticks:
        c.move_to(c.at(day, "18:10"))
        c.run_due(c.tick_automation(), set(), "automation 18:10")
    c.move_to(c.at(day, "18:30"))
    registry = ModelRegistry(settings.registry_path())
    before = {s: registry.get_alias(s, model_ops.CHAMPION).version for s in SPECS}
    retrains = c.tick_retrain()
    for r in retrains:
        c.execute(r, gate_may_fail=True)
        c.say(f"retrain requested: {r.tags['batch_platform/retrain_spec']} ({r.tags['batch_platform/retrain_reason'][:120]})")
    if retrains:
        # a retrain ends at the gate; the champion asset promotes a passed candidate when it updates
        c.move_to(c.at(day, "19:00"))
        specs = sorted(r.tags["batch_platform/retrain_spec"] for r in retrains)
        c.run_due(c.tick_automation(), {"-:" + ",".join(f"{s}_champion_model" for s in specs)}, "automation 19:00")
        after = {s: registry.get_alias(s, model_ops.CHAMPION).version for s in SPECS}
        moved = sorted(s for s in SPECS if after[s] != before[s])
        expect(not set(moved) & set(SHADOWED), f"a shadowed spec promoted at its gate: {moved}")
        c.promoted.update({s: day for s in moved})
        c.replaced.update({s: before[s] for s in moved})
        c.gate_promoted.update(moved)
        for s in SHADOWED:
            challenger = registry.get_alias(s, model_ops.CHALLENGER)
            if challenger is not None:
                c.challengers[s] = challenger.version
        c.say(f"champions after the retrain: {after} (moved: {moved or 'none'}; in shadow: {c.challengers})")
        c.move_to(c.at(day, "19:10"))
        # tomorrow's flights (not flown yet) are re-scored by the new champion; nothing else
        expected = {f"{tomorrow}:" + ",".join(f"{s}_predictions" for s in moved)} if moved else set()
        c.run_due(c.tick_automation(), expected, "automation 19:10 (after a promotion)")
        check_served(c, tomorrow, moved)
    c.move_to(c.at(day, "20:05"))
    states = c.freshness()
    failing = {k: v for k, v in states.items() if v != "PASS"}
    expect(not failing, f"freshness at 20:05: {failing}")


def run(first_live_day: dt.date, days: int = LIVE_DAYS) -> Cycle:
    # a persistent instance (DAGSTER_HOME): the daemon that makes one morning's judgement shares it
    with dg.DagsterInstance.get() as instance:
        pause_sensors(instance, daemon_workspace(), HARNESS_SENSORS)
        return _run(instance, first_live_day, days)


def _run(instance: dg.DagsterInstance, first_live_day: dt.date, days: int) -> Cycle:
    d0 = first_live_day
    with time_machine.travel(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) as tr:
        c = Cycle(instance, first_live_day)
        c.traveller = tr
        one = dt.timedelta(days=1)

        # -- first start: everything published so far arrives at once, as one backfill ----------------------
        c.move_to(c.at(d0, "05:00"))
        c.publish(d0 - HISTORY_DAYS * one, d0 - 2 * one, schedule_through=d0)
        (backfill,) = c.tick_arrivals()
        expect(backfill.asset_graph_subset is not None, f"catch-up is not one backfill: {describe(backfill)}")
        parts = backfill.asset_graph_subset.partitions_subsets_by_asset_key
        counts = {k.path[-1]: len(p.get_partition_keys()) for k, p in parts.items()}
        expect(counts == {"flights": HISTORY_DAYS - 1, "weather": HISTORY_DAYS - 1,
                          "flight_schedule": HISTORY_DAYS + 1}, f"catch-up partitions {counts}")
        expect({k.path[-1] for k in backfill.asset_graph_subset.non_partitioned_asset_keys}
               == {"planes", "airports", "airlines"}, "catch-up without the reference snapshots")
        # the automation sensor ticks all along: before the raw layer is loaded nothing is due
        c.run_due(c.tick_automation(), set(), "automation 05:00 (nothing loaded yet)")
        c.execute(backfill)
        c.say(f"catch-up backfill loaded {counts} and the reference snapshots")
        c.move_to(c.at(d0, "05:01"))
        expect(not c.tick_arrivals(), "a loaded catch-up is requested again")

        # -- features, then the first champion, by automation alone ----------------------------------------
        # the features, and on them the first training sets, candidates, gates and champions: one run
        c.move_to(c.at(d0, "05:10"))
        first = {f"{s}_{k}" for s in SPECS for k in ("training_set", "candidate_model", "champion_model")}
        reqs = c.tick_automation()
        c.run_due(features_request(reqs, "05:10", also=first), None, "automation 05:10")
        c.skew_checks.clear()  # the first training set precedes any scoring: nothing to compare yet
        c.move_to(c.at(d0, "05:20"))
        c.run_due(c.tick_automation(), set(), "automation 05:20")

        for i in range(days):
            day = d0 + i * one
            morning(c, i, day)
            evening(c, i, day)
        if days > DRIFT_DAYS[-1]:
            expect(dict(c.retrain_requests) == {s: 1 for s in SPECS},
                   f"retrain requests over the drift episode: {dict(c.retrain_requests)} (expected one per spec)")
            # the retrain's training sets hold flights the cycle scored: what it served is what training sees
            for ev in c.skew_checks:
                md = {k: v.value for k, v in ev.metadata.items()}
                expect(ev.passed and md["rows_compared"] > 3_000 and md["rows_mismatched"] == 0,
                       f"{ev.asset_key.to_user_string()} skew: {ev.description} {md}")
            expect(len(c.skew_checks) == len(SPECS), f"skew checks: {len(c.skew_checks)}")
        if days > ROLLBACK_BY:
            # the drift retrain's candidates: a shadowed one ended by a decision on final labels (or expired by
            # its age), a champion promoted on its gate served the broken feed and was rolled back in time
            expect(not c.challengers, f"challengers still in shadow at the end: {c.challengers}")
            expect(c.gate_promoted <= set(c.rolled_back), f"rolled back {sorted(c.rolled_back)}, promoted "
                   f"on the gate {sorted(c.gate_promoted)}")
            late = {s: d for s, d in c.rolled_back.items() if d > d0 + ROLLBACK_BY * one}
            expect(not late, f"rolled back after day {ROLLBACK_BY}: {late}")
            expect(c.gate_promoted and c.decided, f"the lifecycle was not exercised: gate promotions "
                   f"{c.gate_promoted}, shadow decisions {c.decided}")
            # the daemon judged a rollback's first chance: the broken feed's champion was rolled back by it
            expect(c.daemon_judged is not None and set(c.rolled_back.values()) == {c.daemon_judged},
                   f"rolled back {c.rolled_back}, not (only) on the daemon's morning {c.daemon_judged}")
        return c


def main() -> int:
    first = dt.date.fromisoformat(sys.argv[1])
    days = int(sys.argv[2]) if len(sys.argv) > 2 else LIVE_DAYS  # fewer: a quicker look while developing
    try:
        c = run(first, days)
        print(f"time spent: {dict(c.timings)}", flush=True)
    except Expectation as e:
        print(f"EXPECTATION FAILED: {e}", flush=True)
        return 1
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
