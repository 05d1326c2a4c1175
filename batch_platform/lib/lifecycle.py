"""One step of the promotion lifecycle of a spec, applied to the registry: what the champion asset runs.

Reads the registry's aliases (``champion``, ``challenger``, ``canary``) and the warehouse's evidence
(:mod:`batch_platform.lib.shadow`), asks :mod:`batch_platform.lib.promotion` what to do, and does it -- every move
logged in the alias log with its evidence:

* no champion: a candidate whose gate passed (against the floor) is promoted: there is nothing to shadow against;
* a challenger gated against another champion than the current one is withdrawn (its report is stale);
* ``shadow_min_days == 0``: the challenger is promoted at once (the spec opts out of shadowing);
* a challenger in shadow: :func:`promotion.shadow_step` on the days after its training data (the first day after
  its test window, so never a day it was measured on), with labels final at the data clock;
* a challenger in canary: :func:`promotion.canary_step` once ``canary_min_days`` canary days have final labels, on
  every day since the shadow began (the canary days add to the shadow evidence);
* no challenger, a champion promoted over an earlier one (by the lifecycle, its gate or by hand):
  :func:`promotion.rollback_step` on the days it served, against what the earlier one measured when it was
  replaced (its shadow-comparison metric, else its metric on the gate's test window); a rollback verifies the
  earlier version first (``verify``: artefact sha256 and smoke score).

Promotion clears the ``challenger`` and ``canary`` aliases; a withdrawal clears them too. Days are data days: the
data clock (``now``, when the newest loaded batch was published) decides which labels are final, so the lifecycle
runs the same on the replayed 2013 dates and on live ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from batch_platform.lib import promotion, shadow
from batch_platform.lib.promotion import PromotionPolicy, Step
from batch_platform.lib.registry import CANARY, CHALLENGER, CHAMPION, ModelRegistry, ModelVersion
from batch_platform.lib.specs import ModelSpec


@dataclass
class LifecycleResult:
    spec: str
    steps: list[Step] = field(default_factory=list)
    champion_before: int | None = None
    champion_after: int | None = None

    @property
    def champion_moved(self) -> bool:
        return self.champion_after != self.champion_before

    def describe(self) -> str:
        return "; ".join(f"{s.action}: {s.reason}" for s in self.steps) or "nothing to do"


def first_unseen_day(spec: ModelSpec, version: ModelVersion) -> dt.date:
    """The first flight day after every window ``version`` was trained, stopped or tested on."""
    cutoff = dt.datetime.fromisoformat(version.fingerprint["training_cutoff"])
    return spec.last_final_day(cutoff) + dt.timedelta(days=1)


def advance(spec: ModelSpec, registry: ModelRegistry, con: duckdb.DuckDBPyConnection, *, now: dt.datetime,
            run_id: str, verify: Callable[[ModelVersion], None], candidate: ModelVersion | None = None,
            trigger: str = "run") -> LifecycleResult:
    """Take the lifecycle one step for ``spec`` (see the module docstring). ``candidate``: the version whose gate
    this run judged (the first model's only way in); ``now``: the data clock."""
    policy = PromotionPolicy.from_spec(spec)
    champion = registry.get_alias(spec.name, CHAMPION)
    result = LifecycleResult(spec.name, champion_before=champion.version if champion else None)
    challenger = registry.get_alias(spec.name, CHALLENGER)
    as_of = {"as_of": now.isoformat(), "trigger": trigger}

    if champion is None:
        candidate = candidate or _newest_first_model(registry, spec.name)
        if candidate is not None and (candidate.gate_report or {}).get("passed"):
            registry.promote(spec.name, candidate.version, gate_report=candidate.gate_report, run_id=run_id,
                             reason=f"first model: gate passed against the floor ({trigger})", evidence=as_of)
            result.steps.append(Step("promote", f"v{candidate.version}: first model, gate passed", as_of))
    elif challenger is not None and challenger.version != champion.version:
        result.steps.append(_challenger_step(spec, policy, registry, con, champion, challenger, now, run_id, as_of))
    else:
        step = _rollback_watch(spec, policy, registry, con, champion, now, run_id, verify, as_of)
        if step is not None:
            result.steps.append(step)
    after = registry.get_alias(spec.name, CHAMPION)
    result.champion_after = after.version if after else None
    return result


def _newest_first_model(registry: ModelRegistry, spec_name: str) -> ModelVersion | None:
    """The newest version whose gate passed against the floor (judged with no champion), if any."""
    passed = [v for v in registry.list_versions(spec_name)
              if (v.gate_report or {}).get("passed") and (v.gate_report or {}).get("champion_version") is None]
    return passed[-1] if passed else None


def _challenger_step(spec, policy, registry, con, champion, challenger, now, run_id, as_of) -> Step:
    report = challenger.gate_report or {}
    if report.get("champion_version") != champion.version:
        step = Step("withdraw", f"v{challenger.version} was gated against v{report.get('champion_version')}, the "
                    f"champion is now v{champion.version}: gate it again", as_of)
        _clear(spec, registry, step, run_id)
        return step
    if policy.shadow_min_days == 0:
        step = Step("promote", "shadow_min_days is 0: promoted on its gate", as_of)
        _promote(spec, registry, challenger, step, run_id)
        return step
    first = first_unseen_day(spec, challenger)
    age = (now - dt.datetime.fromisoformat(challenger.fingerprint["training_cutoff"])).days
    canary = registry.get_alias(spec.name, CANARY)
    if canary is not None and canary.version == challenger.version:
        started = registry.alias_history(spec.name, CANARY)[-1].evidence or {}
        canary_first = dt.date.fromisoformat(started.get("first_day", first.isoformat()))
        # the comparison keeps every day since the shadow began (two canary days alone hold no interval worth
        # the name); it decides once the canary has served canary_min_days days with final labels
        rows = shadow.paired_rows(con, spec, champion=champion.version, challenger=challenger.version,
                                  first_day=first, now=now)
        canary_days = len({d for d in rows[promotion.DAY] if d >= canary_first})
        if canary_days < policy.canary_min_days:
            comparison = promotion.Comparison(promotion.WAITING, f"{canary_days} of {policy.canary_min_days} canary "
                                              "day(s) with final labels", policy.metric, [], len(rows), 0)
        else:
            comparison = promotion.compare(rows, policy, min_days=policy.shadow_min_days,
                                           min_rows=policy.shadow_min_rows)
        step = promotion.canary_step(comparison, policy, (now.date() - canary_first).days, started.get("shadow"))
    else:
        rows = shadow.paired_rows(con, spec, champion=champion.version, challenger=challenger.version,
                                  first_day=first, now=now)
        comparison = promotion.compare(rows, policy, min_days=policy.shadow_min_days,
                                       min_rows=policy.shadow_min_rows)
        step = promotion.shadow_step(comparison, policy, shadow_days=age)
    step = Step(step.action, f"v{challenger.version} vs champion v{champion.version}: {step.reason}",
                {**step.evidence, **as_of, "first_day": first.isoformat()})
    if step.action == "promote":
        _promote(spec, registry, challenger, step, run_id)
    elif step.action == "withdraw":
        _clear(spec, registry, step, run_id)
    elif step.action == "start_canary":
        # the canary serves from the next day scored: the first day whose cutoff is after the data clock
        canary_first = now.date() + dt.timedelta(days=1)
        registry.set_alias(spec.name, CANARY, challenger.version, run_id=run_id, reason=step.reason[:500],
                           evidence={**step.evidence, "first_day": canary_first.isoformat(),
                                     "shadow": step.evidence.get("comparison")})
    return step


def _promote(spec: ModelSpec, registry: ModelRegistry, version: ModelVersion, step: Step, run_id: str) -> None:
    registry.promote(spec.name, version.version, gate_report=version.gate_report, run_id=run_id,
                     reason=step.reason[:500], evidence=step.evidence)
    _clear(spec, registry, Step("clear", f"v{version.version} promoted", step.evidence), run_id)


def _clear(spec: ModelSpec, registry: ModelRegistry, step: Step, run_id: str) -> None:
    aliases = registry.aliases(spec.name)
    for alias in (CANARY, CHALLENGER):
        if alias in aliases:
            registry.set_alias(spec.name, alias, None, run_id=run_id, reason=step.reason[:500],
                               evidence=step.evidence)


def _rollback_watch(spec, policy, registry, con, champion, now, run_id, verify, as_of) -> Step | None:
    history = registry.alias_history(spec.name, CHAMPION)
    last = history[-1] if history else None
    if last is None or last.action != "promote" or last.from_version is None or last.to_version != champion.version:
        return None  # a first model, or a champion put back by a rollback: nothing to roll back to
    evidence = last.evidence or {}
    promoted_as_of = evidence.get("as_of")
    if promoted_as_of is None:
        return None  # promoted before the lifecycle recorded its data clock
    since = (now - dt.datetime.fromisoformat(promoted_as_of)).total_seconds() / 86_400
    previous_metric, source = _previous_metric(policy, evidence, champion, last.from_version)
    rows = shadow.served_rows(con, spec, version=champion.version,
                              first_day=dt.datetime.fromisoformat(promoted_as_of).date() + dt.timedelta(days=1),
                              now=now)
    step = promotion.rollback_step(rows, policy, champion=champion.version, previous=last.from_version,
                                   previous_metric=previous_metric, days_since_promotion=since,
                                   previous_source=source)
    if step.action != "rollback":
        return step
    step = Step(step.action, step.reason, {**step.evidence, **as_of})
    registry.rollback(spec.name, last.from_version, verify=verify, run_id=run_id, reason=step.reason[:500],
                      evidence=step.evidence)
    return step


def _previous_metric(policy: PromotionPolicy, evidence: dict, champion: ModelVersion,
                     previous: int) -> tuple[float | None, str]:
    """What the previous champion measured on held-out flights when ``champion`` replaced it: its metric in the
    shadow comparison that promoted ``champion``; for a promotion without one (``shadow_min_days`` 0, or by hand),
    its metric on the test window of ``champion``'s gate, when that gate judged against it on the same metric."""
    shadow_metric = (evidence.get("comparison") or {}).get("champion_metric")
    if shadow_metric is not None:
        return float(shadow_metric), "shadow comparison"
    report = champion.gate_report or {}
    if (report.get("champion_version") == previous and report.get("metric") == policy.metric
            and report.get("champion_metric") is not None):
        return float(report["champion_metric"]), "gate's test window"
    return None, "shadow comparison"
