"""The promotion lifecycle's decisions (:mod:`batch_platform.lib.promotion`) and its warehouse evidence
(:mod:`batch_platform.lib.shadow`) and the lifecycle applied to a registry and a warehouse
(:mod:`batch_platform.lib.lifecycle`), on synthetic cases with known answers. Real challengers on the 2013 summer
are in test_loop.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd

from batch_platform.lib import promotion, scoring, shadow
from batch_platform.lib.promotion import PromotionPolicy, compare, rollback_step, shadow_step
from batch_platform.lib.specs import load_specs

def policy(**kw) -> PromotionPolicy:
    return PromotionPolicy(**{"metric": "roc_auc", "tolerance": 0.005, "n_bootstrap": 400, **kw})


def days_of(rng: np.random.Generator, days: int, rows: int, signal_champion: float, signal_challenger: float):
    out = []
    for d in range(days):
        x = rng.normal(size=rows)
        y = (rng.random(rows) < 1 / (1 + np.exp(-(-1.3 + 1.5 * x)))).astype(int)
        out.append(pd.DataFrame({
            promotion.DAY: dt.date(2013, 7, 1) + dt.timedelta(days=d), promotion.LABEL: y,
            promotion.CHAMPION_SCORE: signal_champion * x + rng.normal(size=rows),
            promotion.CHALLENGER_SCORE: signal_challenger * x + rng.normal(size=rows)}))
    return pd.concat(out, ignore_index=True)


def test_the_comparison_waits_for_enough_days_and_rows_then_decides():
    rng = np.random.default_rng(1)
    better = days_of(rng, 4, 800, 1.0, 1.6)
    early = compare(better[better[promotion.DAY] < dt.date(2013, 7, 3)], policy(), min_days=3, min_rows=1000)
    assert early.verdict == promotion.WAITING and "2 of 3 day(s)" in early.reason
    assert shadow_step(early, policy(), shadow_days=2).action == "wait"
    done = compare(better, policy(), min_days=3, min_rows=1000)
    assert done.verdict == promotion.CONFIRMED and done.ci_low > 0 and len(done.days) == 4
    step = shadow_step(done, policy(), shadow_days=4)
    assert step.action == "promote" and step.evidence["comparison"]["difference"] == done.difference
    assert shadow_step(done, policy(canary_share=0.1), shadow_days=4).action == "start_canary"

    worse = compare(days_of(rng, 4, 800, 1.6, 1.0), policy(), min_days=3, min_rows=1000)
    assert worse.verdict == promotion.REFUTED and worse.ci_high < 0
    assert shadow_step(worse, policy(), shadow_days=4).action == "withdraw"

    same = compare(days_of(rng, 4, 800, 1.2, 1.2), policy(), min_days=3, min_rows=1000)
    if same.verdict == promotion.INCONCLUSIVE:
        assert shadow_step(same, policy(), shadow_days=4).action == "wait"
        assert "expired" in shadow_step(same, policy(shadow_max_days=5), shadow_days=5).reason


def test_rollback_when_the_new_champion_collapses_below_the_previous_shadow_metric():
    rng = np.random.default_rng(2)
    healthy = days_of(rng, 3, 800, 1.5, 0.0)  # champion_score: the new champion's served scores
    collapsed = healthy.assign(**{promotion.CHAMPION_SCORE: rng.normal(size=len(healthy))})  # corrupted features
    from batch_platform.lib.gate import metric_value

    previous_metric = metric_value("roc_auc", healthy[promotion.LABEL], healthy[promotion.CHAMPION_SCORE]) + 0.01
    kw = {"champion": 5, "previous": 4, "previous_metric": previous_metric}
    assert rollback_step(healthy, policy(), days_since_promotion=3, **kw).action == "none"
    step = rollback_step(collapsed, policy(), days_since_promotion=3, **kw)
    assert step.action == "rollback" and step.evidence["ci_high"] < previous_metric
    assert rollback_step(collapsed, policy(), days_since_promotion=9, **kw).action == "none"  # outside the window
    one_day = collapsed[collapsed[promotion.DAY] == collapsed[promotion.DAY].min()]
    assert rollback_step(one_day, policy(), days_since_promotion=1, **kw).action == "none"  # too early to judge
    floor = rollback_step(healthy, policy(rollback_floor=0.95), days_since_promotion=3,
                          **{**kw, "previous_metric": None})
    assert floor.action == "rollback" and "hard floor" in floor.reason


def test_canary_keys_are_a_stable_hash_the_same_in_another_process():
    keys = [f"2013-07-0{d}:UA{n}" for d in range(1, 4) for n in range(2_000)]
    chosen = promotion.canary_selected(keys, 0.1, "flight_delay")
    assert 0.085 < chosen.mean() < 0.115
    assert (promotion.canary_selected(keys[::-1], 0.1, "flight_delay")[::-1] == chosen).all()  # per key, not order
    assert (promotion.canary_selected(keys, 0.2, "flight_delay") >= chosen).all()  # a larger share keeps the keys
    code = ("import sys, json; from batch_platform.lib.promotion import canary_selected; "
            "keys = json.loads(sys.stdin.read()); print(''.join('1' if c else '0' for c in "
            "canary_selected(keys, 0.1, 'flight_delay')))")
    import json

    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(keys), capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other == "".join("1" if c else "0" for c in chosen)


# -- evidence from the warehouse ------------------------------------------------------------------------------------


def test_paired_rows_join_served_and_shadow_rows_of_the_two_versions_with_final_labels(tmp_path):
    spec = load_specs()["flight_delay"]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA predictions; CREATE SCHEMA marts")
    for table in (scoring.table_name(spec), scoring.table_name(spec, shadow=True)):
        con.execute(scoring._ddl(spec, table))
    con.execute("CREATE TABLE marts.flight_labels (flight_id VARCHAR, flight_date DATE, is_delayed_15 BOOLEAN)")
    rows = []
    for day in (dt.date(2013, 7, 1), dt.date(2013, 7, 2), dt.date(2013, 7, 9)):
        for n in range(4):
            key = f"{day}:{n}"
            con.execute("INSERT INTO marts.flight_labels VALUES (?, ?, ?)", [key, day, n % 2 == 0])
            canary = n == 3  # served by the challenger (v2), the champion (v1) in the shadow table
            fallback = "missing_features:x" if n == 2 else None
            rows.append((day, key, 0.1 * n, 2 if canary else 1, fallback, False))
            rows.append((day, key, 0.5 + 0.1 * n, 1 if canary else 2, fallback, True))
    stamp = dt.datetime(2013, 7, 1, tzinfo=dt.UTC)
    for day, key, score, version, fallback, is_shadow in rows:
        con.execute(f"INSERT INTO {scoring.table_name(spec, shadow=is_shadow)} VALUES "
                    "(?, ?, ?, NULL, NULL, ?, 'sha', 'a', 'r', ?, ?, 'f', ?)",
                    [day, key, score, version, stamp, stamp, fallback])
    now = spec.label_final_at(dt.date(2013, 7, 2))  # 2013-07-09 is not final yet
    paired = shadow.paired_rows(con, spec, champion=1, challenger=2, first_day=dt.date(2013, 7, 1), now=now)
    assert sorted({str(d) for d in paired[promotion.DAY]}) == ["2013-07-01", "2013-07-02"]
    assert len(paired) == 6  # 3 model-scored keys a day (the fallback row left out)
    canary = paired[paired["key"].str.endswith(":3")]
    assert (canary["served_version"] == 2).all()
    # whichever table a version's score sits in, it lands in its own column
    assert np.allclose(canary[promotion.CHAMPION_SCORE], 0.5 + 0.3) and np.allclose(canary[promotion.CHALLENGER_SCORE], 0.3)
    assert (paired[promotion.LABEL] == paired["key"].str[-1].astype(int).map(lambda n: int(n % 2 == 0))).all()
    assert shadow.paired_rows(con, spec, champion=1, challenger=3, first_day=dt.date(2013, 7, 1), now=now).empty
    served = shadow.served_rows(con, spec, version=2, first_day=dt.date(2013, 7, 1), now=now)
    assert list(served["key"]) == ["2013-07-01:3", "2013-07-02:3"]


# -- the lifecycle applied to a registry and a warehouse ------------------------------------------------------------


class Lifecycle:
    """A registry with a champion v1 and a gated challenger v2, and a warehouse whose days hold both models' scores
    of the same flights (v2 genuinely better unless told otherwise), their labels and the load log's clock."""

    def __init__(self, tmp_path, *, promotion: dict | None = None, challenger_signal: float = 1.6):
        from batch_platform.lib.registry import ModelRegistry

        base = load_specs()["flight_delay"]
        self.spec = base.model_copy(update={"promotion": base.promotion.model_copy(
            update={"shadow_min_days": 3, **(promotion or {})})})  # (the shipped 7 days: test_loop.py)
        self.registry = ModelRegistry(tmp_path / "registry.db")
        self.cutoff = dt.datetime(2013, 7, 1, 10, tzinfo=dt.UTC)
        for n in (1, 2):
            self.registry.register_version(self.spec.name, artifact_path=f"m{n}.txt", sha256=f"{n:064x}",
                                           fingerprint={"training_cutoff": self.cutoff.isoformat()}, metrics={},
                                           run_id="setup")
        self.registry.promote(self.spec.name, 1, gate_report={"passed": True, "candidate_version": 1,
                                                              "champion_version": None}, run_id="setup")
        self.registry.attach_gate_report(self.spec.name, 2, {"passed": True, "candidate_version": 2,
                                                             "champion_version": 1})
        self.registry.set_alias(self.spec.name, "challenger", 2, reason="gate passed", run_id="setup")
        self.con = duckdb.connect(str(tmp_path / "w.duckdb"))
        self.con.execute("CREATE SCHEMA predictions; CREATE SCHEMA marts")
        for table in (scoring.table_name(self.spec), scoring.table_name(self.spec, shadow=True)):
            self.con.execute(scoring._ddl(self.spec, table))
        self.con.execute("CREATE TABLE marts.flight_labels (flight_id VARCHAR, flight_date DATE, is_delayed_15 BOOLEAN)")
        self.rng = np.random.default_rng(11)
        self.signal = {1: 1.0, 2: challenger_signal}
        self.verified = []

    def score_day(self, day: dt.date, served: int, shadow_version: int | None, *, broken: int | None = None):
        n = 900
        x = self.rng.normal(size=n)
        y = self.rng.random(n) < 1 / (1 + np.exp(-(-1.3 + 1.5 * x)))
        stamp = dt.datetime(2013, 7, 1, tzinfo=dt.UTC)
        keys = [f"{day}:{i}" for i in range(n)]
        self.con.executemany("INSERT INTO marts.flight_labels VALUES (?, ?, ?)",
                             [(k, day, bool(v)) for k, v in zip(keys, y, strict=True)])
        for version, is_shadow in ((served, False), (shadow_version, True)):
            if version is None:
                continue
            score = self.signal[version] * x + self.rng.normal(size=n)
            if version == broken:
                score = self.rng.normal(size=n)  # its features corrupted: scores carry nothing
            frame = pd.DataFrame({"partition_date": day, "flight_id": keys, "score": 1 / (1 + np.exp(-score)),
                                  "decision": None, "decision_threshold": None, "model_version": version,
                                  "model_sha256": f"{version:064x}", "alias": "x", "run_id": "r", "scored_at": stamp,
                                  "prediction_cutoff": stamp, "feature_fingerprint": "f", "fallback_reason": None})
            self.con.register("frame", frame)
            self.con.execute(f"INSERT INTO {scoring.table_name(self.spec, shadow=is_shadow)} SELECT * FROM frame")
            self.con.unregister("frame")

    def advance(self, through: dt.date):
        from batch_platform.lib import lifecycle

        return lifecycle.advance(self.spec, self.registry, self.con, now=self.spec.label_final_at(through),
                                 run_id="test", verify=self.verified.append)


DAY1 = dt.date(2013, 7, 1)


def _days(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]


def test_lifecycle_shadows_then_promotes_on_final_labels_then_rolls_back_a_collapse(tmp_path):
    lc = Lifecycle(tmp_path)
    shadow_days = _days(DAY1, 4)
    for day in shadow_days:
        lc.score_day(day, served=1, shadow_version=2)
    waiting = lc.advance(shadow_days[1])  # two days final: not enough
    assert not waiting.champion_moved and waiting.steps[0].action == "wait" and "2 of 3 day(s)" in waiting.describe()
    promoted = lc.advance(shadow_days[3])
    assert promoted.champion_moved and promoted.champion_after == 2, promoted.describe()
    event = lc.registry.alias_history(lc.spec.name, "champion")[-1]
    comparison = event.evidence["comparison"]
    assert event.action == "promote" and comparison["verdict"] == promotion.CONFIRMED and len(comparison["days"]) == 4
    assert "challenger" not in lc.registry.aliases(lc.spec.name)
    # the new champion serves; on the third day its features are corrupted and stay so
    served_days = _days(shadow_days[-1] + dt.timedelta(days=2), 4)
    lc.score_day(served_days[0], served=2, shadow_version=None)
    for day in served_days[1:]:
        lc.score_day(day, served=2, shadow_version=None, broken=2)
    assert lc.advance(served_days[1]).steps[0].action == "none"  # one served day final: too early to judge
    rolled = lc.advance(served_days[3])
    assert rolled.champion_after == 1 and rolled.steps[0].action == "rollback", rolled.describe()
    assert [v.version for v in lc.verified] == [1]  # the restored version was verified first
    last = lc.registry.alias_history(lc.spec.name, "champion")[-1]
    assert last.action == "rollback" and last.evidence["ci_high"] < last.evidence["previous_metric"]
    assert last.evidence["previous_metric_source"] == "shadow comparison"
    assert not lc.advance(served_days[3]).steps  # after a rollback there is nothing to watch
    assert not lc.registry.consistency_problems()


def test_lifecycle_withdraws_a_worse_challenger_and_a_stale_one(tmp_path):
    worse = Lifecycle(tmp_path / "worse", challenger_signal=0.3)
    for day in _days(DAY1, 4):
        worse.score_day(day, served=1, shadow_version=2)
    result = worse.advance(DAY1 + dt.timedelta(days=3))
    assert result.steps[0].action == "withdraw" and "refuted" in result.describe()
    assert worse.registry.aliases(worse.spec.name) == {"champion": 1}

    stale = Lifecycle(tmp_path / "stale")
    stale.registry.attach_gate_report(stale.spec.name, 2, {"passed": True, "candidate_version": 2,
                                                           "champion_version": None})
    result = stale.advance(DAY1)
    assert result.steps[0].action == "withdraw" and "gate it again" in result.describe()


def test_lifecycle_canary_serves_a_share_then_promotes(tmp_path):
    lc = Lifecycle(tmp_path, promotion={"canary_share": 0.2, "canary_min_days": 2})
    for day in _days(DAY1, 3):
        lc.score_day(day, served=1, shadow_version=2)
    started = lc.advance(DAY1 + dt.timedelta(days=2))
    assert started.steps[0].action == "start_canary" and lc.registry.aliases(lc.spec.name)["canary"] == 2
    first_canary = dt.date.fromisoformat(lc.registry.alias_history(lc.spec.name, "canary")[-1].evidence["first_day"])
    for day in _days(first_canary, 2):
        lc.score_day(day, served=1, shadow_version=2)  # (which keys each model serves does not change the pairing)
    assert lc.advance(first_canary).steps[0].action == "wait"
    done = lc.advance(first_canary + dt.timedelta(days=1))
    assert done.champion_after == 2 and done.steps[0].evidence["phase"] == "canary", done.describe()
    assert set(lc.registry.aliases(lc.spec.name)) == {"champion"}


def test_manual_promotion_still_works_and_logs_what_it_skipped(tmp_path):
    from batch_platform.defs.registry.assets import promote_version

    lc = Lifecycle(tmp_path)  # v2 is the challenger, in shadow
    lc.registry.attach_gate_report(lc.spec.name, 2, {**lc.registry.get_version(lc.spec.name, 2).gate_report,
                                                     "metric": "roc_auc", "champion_metric": 0.74})
    as_of = lc.spec.label_final_at(DAY1)
    event = promote_version(lc.registry, lc.spec.name, 2, "manual-run", "hotfix", as_of=as_of)
    assert (event.action, event.from_version, event.to_version) == ("promote", 1, 2)
    assert "hotfix (manual promotion, skipping its shadow comparison on final labels)" == event.reason
    assert event.evidence == {"manual": True, "skipped": ["its shadow comparison on final labels"],
                              "as_of": as_of.isoformat()}
    assert lc.registry.aliases(lc.spec.name) == {"champion": 2}
    # a champion promoted by hand is watched like any other: its feed breaks, it is rolled back
    served = _days(as_of.date() + dt.timedelta(days=1), 3)
    for day in served:
        lc.score_day(day, served=2, shadow_version=None, broken=2)
    rolled = lc.advance(served[-1])
    assert rolled.champion_after == 1 and rolled.steps[0].action == "rollback", rolled.describe()
    assert rolled.steps[0].evidence["previous_metric_source"] == "gate's test window"


def test_a_champion_promoted_on_its_gate_is_rolled_back_against_the_gate_window_metric(tmp_path):
    """shadow_min_days 0: no shadow comparison, so the previous champion's metric on the gate's test window is what
    the new champion's production metric is held to (a gate report on another metric, or against another champion,
    holds nothing to compare with: then only the hard floor could roll it back)."""
    lc = Lifecycle(tmp_path, promotion={"shadow_min_days": 0})
    report = {"passed": True, "candidate_version": 2, "champion_version": 1, "metric": "roc_auc",
              "champion_metric": 0.74, "candidate_metric": 0.76}
    lc.registry.attach_gate_report(lc.spec.name, 2, report)
    promoted = lc.advance(DAY1)
    assert promoted.champion_after == 2 and "promoted on its gate" in promoted.describe()
    as_of = dt.datetime.fromisoformat(lc.registry.alias_history(lc.spec.name, "champion")[-1].evidence["as_of"])
    served = _days(as_of.date() + dt.timedelta(days=1), 3)  # the days it serves, its feed broken
    for day in served:
        lc.score_day(day, served=2, shadow_version=None, broken=2)
    assert lc.advance(served[0]).steps[0].action == "none"  # one day final: too early
    rolled = lc.advance(served[-1])
    assert rolled.champion_after == 1 and rolled.steps[0].action == "rollback", rolled.describe()
    evidence = rolled.steps[0].evidence
    assert evidence["previous_metric"] == 0.74 and evidence["previous_metric_source"] == "gate's test window"
    assert evidence["ci_high"] < 0.74 and "gate's test window" in rolled.describe()
    assert [v.version for v in lc.verified] == [1]

    other = Lifecycle(tmp_path / "other", promotion={"shadow_min_days": 0})
    other.registry.attach_gate_report(other.spec.name, 2, {**report, "metric": "average_precision"})
    other.advance(DAY1)
    for day in served:
        other.score_day(day, served=2, shadow_version=None, broken=2)
    kept = other.advance(served[-1])
    assert kept.champion_after == 2 and kept.steps[0].evidence["previous_metric"] is None, kept.describe()


def test_a_regression_challenger_is_compared_and_a_collapsed_champion_rolled_back_on_its_error():
    """RMSE: lower is better, no positives to count; the same day-blocked decisions."""
    rng = np.random.default_rng(7)
    frames = []
    for d in range(5):
        y = 50 + rng.normal(0, 10, 600) + rng.normal(0, 5)  # a day-level shock shared by the day's rows
        frames.append(pd.DataFrame({promotion.DAY: dt.date(2013, 7, 1) + dt.timedelta(days=d), promotion.LABEL: y,
                                    promotion.CHAMPION_SCORE: y + rng.normal(0, 6, 600),
                                    promotion.CHALLENGER_SCORE: y + rng.normal(0, 4, 600)}))
    rows = pd.concat(frames, ignore_index=True)
    rmse = policy(metric="rmse", tolerance=0.1)
    better = compare(rows, rmse, min_days=3, min_rows=1000)
    assert better.verdict == promotion.CONFIRMED and better.positives is None
    assert better.challenger_metric < better.champion_metric and better.difference > 0
    swapped = rows.rename(columns={promotion.CHAMPION_SCORE: promotion.CHALLENGER_SCORE,
                                   promotion.CHALLENGER_SCORE: promotion.CHAMPION_SCORE})
    assert compare(swapped, rmse, min_days=3, min_rows=1000).verdict == promotion.REFUTED
    collapsed = rows.assign(**{promotion.CHAMPION_SCORE: rows[promotion.LABEL].mean()})  # a constant: no signal
    kw = {"champion": 5, "previous": 4, "previous_metric": 6.5}
    assert rollback_step(rows, rmse, days_since_promotion=3, **kw).action == "none"
    step = rollback_step(collapsed, rmse, days_since_promotion=3, **kw)
    assert step.action == "rollback" and step.evidence["ci_low"] > 6.5 and "worse than v4" in step.reason
    ceiling = rollback_step(rows, policy(metric="rmse", rollback_floor=5.0), days_since_promotion=3,
                            **{**kw, "previous_metric": None})
    assert ceiling.action == "rollback" and "hard floor" in ceiling.reason
