"""The sensor that moves the promotion lifecycle along each day: when a spec has a challenger in shadow or canary,
or a champion inside its rollback window, a new build of its label model (labels of another day final) requests
one run of its champion asset, which judges the evidence (``lib/lifecycle.py``). The sensor reads only the registry
and the instance; the run reads the warehouse."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
from dagster._time import get_current_datetime
from dagster_dbt import get_asset_key_for_model

from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.jobs import promote_champions_job
from batch_platform.defs.monitoring.automation import default_status
from batch_platform.defs.registry.assets import champion_key
from batch_platform.defs.resources import ModelRegistryResource
from batch_platform.lib.registry import CHALLENGER, CHAMPION, ModelRegistry
from batch_platform.lib.specs import ModelSpec, load_specs

LIFECYCLE_SENSOR = "promotion_lifecycle"
TRIGGER = "batch_platform/trigger"


def pending(registry: ModelRegistry, spec: ModelSpec, now: dt.datetime) -> str | None:
    """Why ``spec``'s lifecycle has something to judge (``None``: nothing)."""
    aliases = registry.aliases(spec.name)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if challenger is not None and challenger != champion:
        return f"challenger v{challenger} vs champion v{champion}"
    history = registry.alias_history(spec.name, CHAMPION)
    last = history[-1] if history else None
    if (last is not None and last.action == "promote" and last.from_version is not None
            and now - dt.datetime.fromisoformat(last.at) <= dt.timedelta(days=spec.promotion.rollback_window_days)):
        return f"champion v{last.to_version} in its rollback window (promoted over v{last.from_version})"
    return None


@dg.sensor(
    name=LIFECYCLE_SENSOR,
    jobs=[promote_champions_job],
    minimum_interval_seconds=300,
    default_status=default_status(),
    description="Per spec with a challenger (shadow or canary) or a champion inside its rollback window: once per "
    "build of its label model, a run of its champion asset, which compares the challenger with the champion on "
    "the days whose labels are final (promote, canary, withdraw) or watches the new champion (rollback).",
)
def promotion_lifecycle(context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource):
    registry = model_registry.registry()
    now = get_current_datetime()
    judged = json.loads(context.cursor) if context.cursor else {}  # spec -> storage id of the build last judged
    requests, notes = [], []
    for spec in load_specs().values():
        why = pending(registry, spec, now)
        build = _newest_build(context.instance, spec, after=judged.get(spec.name))
        if why is None or build is None:
            notes.append(f"{spec.name}: {why or 'nothing to judge'}"
                         + ("" if build else " (no build of its labels since the last judgement)"))
            continue
        requests.append(dg.RunRequest(
            run_key=f"lifecycle:{spec.name}:{build.run_id}",  # one judgement per build of the labels
            job_name=promote_champions_job.name, asset_selection=[champion_key(spec)],
            tags={TRIGGER: LIFECYCLE_SENSOR}))
        judged[spec.name] = build.storage_id
        notes.append(f"{spec.name}: {why}")
    if not requests:
        return dg.SkipReason("; ".join(notes) or "no specs")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(judged, sort_keys=True))


def _newest_build(instance: dg.DagsterInstance, spec: ModelSpec, after: int | None) -> dg.EventLogRecord | None:
    """The newest materialization record of ``spec``'s label model stored after ``after`` (the build the sensor
    last requested a judgement for; ``None``: any), or ``None`` when there is none: the event the request is made
    for, read by its storage id, not "the latest materialization" looked up again later."""
    labels = get_asset_key_for_model([dbt_feature_models], spec.label.model)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=labels, after_storage_id=after), limit=1, ascending=False).records
    return records[0] if records else None


@dg.definitions
def lifecycle_sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[promotion_lifecycle])
