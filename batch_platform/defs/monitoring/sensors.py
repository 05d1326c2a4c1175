"""The sensor that closes the loop: retrain on drift / accuracy loss / model age (ending at the gate; re-scoring
the due day after a promotion is the predictions' automation condition). Every decision is logged and visible: requests carry tags saying why; suppressed or declined decisions
are the tick's skip reason (sensor history in the UI)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._time import get_current_datetime

from batch_platform.defs.jobs import train_and_gate_job
from batch_platform.defs.monitoring.automation import default_status
from batch_platform.defs.monitoring.history import check_evaluations
from batch_platform.defs.monitoring.assets import ACCURACY_CHECK, accuracy_key
from batch_platform.defs.resources import ModelRegistryResource
from batch_platform.defs.scoring.assets import DRIFT_CHECK, predictions_key
from batch_platform.defs.training.assets import training_set_key
from batch_platform.defs.training.models import candidate_key
from batch_platform.lib import drift, model_ops, monitoring
from batch_platform.lib.specs import ModelSpec, load_specs

RETRAIN_SENSOR = "retrain_on_drift"
TAG_SPEC = "batch_platform/retrain_spec"
TAG_CHAMPION = "batch_platform/retrain_champion"
TAG_RULE = "batch_platform/retrain_rule"
TAG_REASON = "batch_platform/retrain_reason"
TAG_TRIGGER = "batch_platform/trigger"
TAG_EVIDENCE = "batch_platform/evidence_partitions"
HISTORY = 200  # check evaluations read per spec and check


def _evaluations(instance: dg.DagsterInstance, key: dg.AssetKey, check: str) -> list[dict]:
    """Newest first: the metadata of recent evaluations of one asset check (with 'passed')."""
    return [{"passed": ev.passed, **{k: v.value for k, v in (ev.metadata or {}).items()}}
            for ev in check_evaluations(instance, key, check, limit=HISTORY)]


def evidence(instance: dg.DagsterInstance, spec: ModelSpec) -> list[monitoring.PartitionEvidence]:
    """One entry per (scored day, model version): the latest drift verdict and accuracy verdict of each."""
    merged: dict[tuple[str, int], dict] = {}
    for md in _evaluations(instance, predictions_key(spec), DRIFT_CHECK):  # newest first: first seen wins
        if "partition" not in md or "drift_severity" not in md:
            continue
        k = (md["partition"], int(md["model_version"]))
        merged.setdefault(k, {}).setdefault("drift_error", md["drift_severity"] == drift.ERROR)
    for md in _evaluations(instance, accuracy_key(spec), ACCURACY_CHECK):
        for v in md.get("versions", []):
            k = (md["partition"], int(v))
            merged.setdefault(k, {}).setdefault("accuracy_failed", int(v) in md.get("failed_versions", []))
    return [monitoring.PartitionEvidence(p, v, **flags) for (p, v), flags in merged.items()]


def retrain_runs(instance: dg.DagsterInstance, spec: str, champion: int | None = None) -> list:
    tags = {TAG_SPEC: spec} | ({TAG_CHAMPION: str(champion)} if champion is not None else {})
    return list(instance.get_run_records(dg.RunsFilter(tags=tags)))


def decide(instance: dg.DagsterInstance, registry, spec: ModelSpec, now: dt.datetime) -> monitoring.RetrainDecision:
    champion = registry.get_alias(spec.name, model_ops.CHAMPION)
    version = champion.version if champion else None
    previous = retrain_runs(instance, spec.name, version) if champion else []
    in_progress = any(r.dagster_run.status in IN_PROGRESS_RUN_STATUSES for r in retrain_runs(instance, spec.name))
    created = dt.datetime.fromisoformat(champion.created_at) if champion else None
    used = [p for r in previous for p in r.dagster_run.tags.get(TAG_EVIDENCE, "").split(",") if p]
    challenger = registry.get_alias(spec.name, model_ops.CHALLENGER)
    return monitoring.retrain_decision(
        spec, version, created, evidence(instance, spec),
        previous_retrains=[r.create_timestamp for r in previous], retrain_in_progress=in_progress, now=now,
        evidence_after=max(used) if used else None, challenger_version=challenger.version if challenger else None)


@dg.sensor(
    name=RETRAIN_SENSOR,
    jobs=[train_and_gate_job],
    minimum_interval_seconds=300,
    default_status=default_status(),
    description="Per spec: reads the drift checks of the prediction assets and the production-accuracy checks of "
    "the current champion and requests `train_and_gate` (training set → candidate → gate; never a promotion) when "
    "the spec's monitoring.retrain rule holds or the champion is too old. One run key per episode "
    "(retrain:<spec>:v<champion>:<n>), a cooldown between episodes, none while a retrain is in progress.",
)
def retrain_on_drift(context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource):
    registry = model_registry.registry()
    now = get_current_datetime()
    requests, notes = [], []
    for spec in load_specs().values():
        d = decide(context.instance, registry, spec, now)
        context.log.info(f"{spec.name}: {'RETRAIN' if d.request else 'no retrain'} — {d.reason}")
        if not d.request:
            notes.append(f"{spec.name}: {d.reason}")
            continue
        requests.append(dg.RunRequest(
            run_key=d.run_key,
            job_name=train_and_gate_job.name,
            asset_selection=[training_set_key(spec), candidate_key(spec)],
            tags={TAG_TRIGGER: RETRAIN_SENSOR, TAG_SPEC: spec.name, TAG_CHAMPION: str(d.champion_version),
                  TAG_RULE: d.rule, TAG_REASON: d.reason[:1000],
                  TAG_EVIDENCE: ",".join(d.partitions)},
        ))
    if not requests:
        return dg.SkipReason("; ".join(notes) or "no specs")
    return dg.SensorResult(run_requests=requests)


@dg.definitions
def sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[retrain_on_drift])
