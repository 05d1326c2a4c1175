"""Freshness policies and declarative automation for every stage, attached in one place (``definitions.py`` maps
:func:`with_policies` over all asset specs).

Freshness policies only *monitor* (Dagster 1.13's ``FreshnessPolicy``: PASS / WARN / FAIL in the UI); the automation
conditions below are what *act*, including on a failed freshness:

============================  =====================================  ====================================================
stage                         freshness                              automation
============================  =====================================  ====================================================
raw daily batches             loaded by 07:30 New York (land 06:00)  the ``raw_daily_ingest`` schedule, 06:30
raw reference snapshots       at most 8 days old                     the ingest schedule's reference refresh (weekly)
dbt features, Feast           built by 09:00 New York                when an upstream updates (raw loaded → dbt → Feast)
champion model                at most ``max_model_age_days`` old     when its candidate updates (promotes only a passed
                                                                     gate); an old model is retrained by the sensor
predictions                   scored by 20:00 New York (cron 19:00)  on the spec's cron, and again when freshness fails
production accuracy           --                                     daily at 08:00 New York (labels mature overnight)
============================  =====================================  ====================================================

Time-partitioned assets act on their latest partition (in the replayed 2013 data set that is 2013-12-31; a
deployment on live data has today's).
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from batch_platform import settings
from batch_platform.lib.specs import load_specs

NY = settings.DATASET_TIMEZONE
RAW_DAILY = dg.FreshnessPolicy.cron(deadline_cron="30 7 * * *", lower_bound_delta=timedelta(hours=2), timezone=NY)
RAW_REFERENCE = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))
FEATURES = dg.FreshnessPolicy.cron(deadline_cron="0 9 * * *", lower_bound_delta=timedelta(hours=3), timezone=NY)
PREDICTIONS = dg.FreshnessPolicy.cron(deadline_cron="0 20 * * *", lower_bound_delta=timedelta(hours=2), timezone=NY)


def upstream_updated() -> dg.AutomationCondition:
    """Like ``eager()`` without its 'no parent partition missing' clause: daily-partitioned parents of an
    unpartitioned table always have missing (future) partitions."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream_updated")


def rerun_when_stale() -> dg.AutomationCondition:
    return (dg.AutomationCondition.freshness_failed().newly_true()
            & ~dg.AutomationCondition.in_progress()).with_label("freshness_failed")


def with_policies(asset: dg.AssetSpec) -> dg.AssetSpec:
    specs = load_specs().values()
    name, group = asset.key.path[-1], asset.group_name or ""
    by_suffix = {f"{s.name}_{suffix}": (s, suffix) for s in specs
                 for suffix in ("champion_model", "predictions", "production_accuracy")}
    if group == "raw":
        daily = asset.partitions_def is not None
        return asset.replace_attributes(freshness_policy=RAW_DAILY if daily else RAW_REFERENCE)
    if group.startswith("features") or group == "feature_store":
        return asset.replace_attributes(freshness_policy=FEATURES, automation_condition=upstream_updated())
    if name in by_suffix:
        spec, kind = by_suffix[name]
        if kind == "champion_model":
            return asset.replace_attributes(
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=timedelta(days=spec.monitoring.max_model_age_days),
                    warn_window=timedelta(days=max(1, spec.monitoring.max_model_age_days - 7))),
                automation_condition=upstream_updated())
        if kind == "predictions":
            return asset.replace_attributes(
                freshness_policy=PREDICTIONS,
                automation_condition=(dg.AutomationCondition.on_cron(spec.schedule, cron_timezone=NY)
                                      | rerun_when_stale()).with_label("daily_cycle_or_stale"))
        return asset.replace_attributes(
            automation_condition=dg.AutomationCondition.on_cron("0 8 * * *", cron_timezone=NY))
    return asset
