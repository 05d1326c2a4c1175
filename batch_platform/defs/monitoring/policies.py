"""Freshness policies and declarative automation for every stage, attached in one place (``definitions.py`` maps
:func:`policy_mapper` over all asset specs). Every rule is derived from the time model (``time_model.yaml``: publication
times, service levels) and the model specs (cutoff, deadline, label embargo, model age); each asset carries the
policy in words in its ``freshness_policy`` metadata.

============================  ===========================================  ===========================================
stage                         freshness (live clock)                       automation
============================  ===========================================  ===========================================
raw daily batches             loaded within 2 h of publication (06:00)     the ``landing_arrivals`` sensor (on arrival)
raw reference snapshots       -- (no publication schedule)                 the ``landing_arrivals`` sensor
features: dbt models, Feast   rebuilt by 09:00, after that morning's load  once all inputs exist, then when one updates
                                                                           (raw → dbt → Feast, one run)
training set, candidate       --                                           once on a fresh instance (the first champion);
                                                                           later the ``retrain_on_drift`` sensor
champion model                younger than ``max_model_age_days``          when its candidate updates (a passed gate)
predictions                   tomorrow's in place by the spec's deadline   the due flight day only (cutoff passed, day
                              (20:00), scored after the cutoff (18:00)     not begun), once its inputs are in; again
                                                                           when an input or the champion changes
production accuracy           --                                           the newest day with final labels only
============================  ===========================================  ===========================================

Freshness policies are wall-clock rules, so they are attached on the live clock only (``lib/clock.py``): on the
2013 replay the data days are not today's and every policy would read FAIL. The automation is the same on both
clocks; on the replay nothing is due (the due partitions are dates the replay does not have).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from batch_platform import settings
from batch_platform.defs.monitoring.conditions import (
    accuracy_due,
    built_from_inputs,
    first_build,
    predictions_due,
    upstream_updated,
)
from batch_platform.lib.contracts import DAILY_CONTRACTS
from batch_platform.lib.cycle import cron_at
from batch_platform.lib.specs import ModelSpec, load_specs
from batch_platform.lib.time_model import TimeModel, load_time_model

FRESHNESS_TEXT = "freshness_policy"
FEATURE_GROUPS = ("features_marts", "feature_store")


def _hours(h: float) -> str:
    return f"{h:g} h"


def _shift(local_time: str, hours: float) -> str:
    h, m = map(int, local_time.split(":"))
    minutes = h * 60 + m + round(hours * 60)
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


class Rules:
    """The policies of each stage, worded and built from the time model and the specs."""

    def __init__(self, tm: TimeModel, specs: Iterable[ModelSpec]):
        self.tm, self.specs = tm, {s.name: s for s in specs}
        self.tz = tm.spec.timezone
        self.levels = tm.spec.service_levels

    def raw(self, table: str) -> tuple[dg.FreshnessPolicy, str]:
        published = self.tm.feed(table).published
        deadline = _shift(published.local_time, self.levels.raw_loaded_within_hours)
        when = {1: "the morning after its day", 0: "on its day", -1: "the day before its day"}.get(
            published.day_offset, f"{published.day_offset:+d} day(s) from its day")
        text = (f"Each day's batch is loaded within {_hours(self.levels.raw_loaded_within_hours)} of its publication "
                f"({published.local_time} {self.tz}, {when}): FAIL from {deadline} until a load after "
                f"{published.local_time}.")
        return dg.FreshnessPolicy.cron(deadline_cron=cron_at(deadline),
                                       lower_bound_delta=timedelta(hours=self.levels.raw_loaded_within_hours),
                                       timezone=self.tz), text

    def features(self) -> tuple[dg.FreshnessPolicy, str]:
        published = min((self.tm.feed(c.table).published.local_time for c in DAILY_CONTRACTS))
        hours = self.levels.raw_loaded_within_hours + self.levels.features_built_within_hours
        deadline = _shift(published, hours)
        text = (f"Rebuilt within {_hours(self.levels.features_built_within_hours)} of its raw inputs' deadline: "
                f"by {deadline} {self.tz} each day, from the batches published at {published} "
                f"(FAIL from {deadline} until a build after {published}).")
        return dg.FreshnessPolicy.cron(deadline_cron=cron_at(deadline), lower_bound_delta=timedelta(hours=hours),
                                       timezone=self.tz), text

    def champion(self, spec: ModelSpec) -> tuple[dg.FreshnessPolicy, str]:
        days = spec.monitoring.max_model_age_days
        warn = max(1, days - 7)
        text = (f"The champion is younger than {days} days (monitoring.max_model_age_days): WARN after {warn} "
                f"days, FAIL after {days} days without a promotion.")
        return dg.FreshnessPolicy.time_window(fail_window=timedelta(days=days), warn_window=timedelta(days=warn)), text

    def predictions(self, spec: ModelSpec) -> tuple[dg.FreshnessPolicy, str]:
        cutoff, deadline = spec.cutoff.local_time, spec.scoring.deadline_local_time
        window = timedelta(hours=int(deadline[:2]) - int(cutoff[:2]), minutes=int(deadline[3:]) - int(cutoff[3:]))
        text = (f"The predictions of the flight day {spec.cutoff.days_before} day(s) ahead are in place by "
                f"{deadline} {spec.cutoff.timezone}, scored after its {cutoff} cutoff (FAIL from {deadline} until "
                f"a scoring after {cutoff}).")
        return dg.FreshnessPolicy.cron(deadline_cron=cron_at(deadline), lower_bound_delta=window,
                                       timezone=spec.cutoff.timezone), text

    def frame_publication_cron(self, spec: ModelSpec) -> str:
        return cron_at(self.tm.feed(self.tm.spec.frames[spec.scoring.model].feed).published.local_time)


def _spec_assets(specs: Iterable[ModelSpec]) -> dict[str, tuple[ModelSpec, str]]:
    return {f"{s.name}_{suffix}": (s, suffix) for s in specs
            for suffix in ("training_set", "candidate_model", "champion_model", "predictions", "production_accuracy")}


def _downstream(assets: list[dg.AssetsDefinition], roots: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """``roots`` and every asset that depends on one of them, directly or not."""
    children: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for a in assets:
        for spec in a.specs:
            for dep in spec.deps:
                children.setdefault(dep.asset_key, set()).add(spec.key)
    seen, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def policy_mapper(assets: list[dg.AssetsDefinition]):
    """A function giving each asset spec of ``assets`` its freshness policy (live clock) and automation condition,
    for ``Definitions.map_asset_specs``."""
    from batch_platform.defs.features.assets import dbt_feature_models

    rules = Rules(load_time_model(), load_specs().values())
    live = settings.data_clock().is_live
    fed_daily = _downstream(assets, {dg.AssetKey(["raw", c.table]) for c in DAILY_CONTRACTS})
    by_name = _spec_assets(rules.specs.values())
    features_key = dg.AssetKey(["feast", "feature_definitions"])

    def policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        name, group = spec.key.path[-1], spec.group_name or ""
        freshness, text, condition = None, None, None
        if group == "raw":
            if spec.partitions_def is not None:
                freshness, text = rules.raw(name)
        elif group.startswith("features") or group == "feature_store":
            condition = built_from_inputs("raw")
            if group in FEATURE_GROUPS and spec.key in fed_daily:
                freshness, text = rules.features()
        elif name in by_name:
            s, kind = by_name[name]
            if kind == "training_set":
                condition = first_build()
            elif kind == "candidate_model":
                condition = upstream_updated()
            elif kind == "champion_model":
                condition = upstream_updated()
                freshness, text = rules.champion(s)
            elif kind == "predictions":
                freshness, text = rules.predictions(s)
                condition = predictions_due(s, features=features_key,
                                            publication_cron=rules.frame_publication_cron(s), timezone=rules.tz)
            elif kind == "production_accuracy":
                labels = get_asset_key_for_model([dbt_feature_models], s.label.model)
                condition = accuracy_due(s, labels=labels, final_cron=cron_at(s.label.final_local_time),
                                         timezone=s.cutoff.timezone)
        attrs: dict = {}
        if condition is not None:
            attrs["automation_condition"] = condition
        if text is not None:
            attrs["metadata"] = {**spec.metadata, FRESHNESS_TEXT: text if live else
                                 f"{text} (A policy on the live clock only; this instance is on "
                                 f"{settings.data_clock().label}.)"}
            if live:
                attrs["freshness_policy"] = freshness
        return spec.replace_attributes(**attrs) if attrs else spec

    return policy
