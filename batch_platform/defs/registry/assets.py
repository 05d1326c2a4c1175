"""The registry stage: champion models (promotion through the gate only) and the promote/rollback jobs."""

import dagster as dg
import pandas as pd
from pydantic import Field

from batch_platform.defs.resources import ModelRegistryResource
from batch_platform.defs.training.models import GATE_CHECK, candidate_key, current_metadata
from batch_platform.lib import model_ops
from batch_platform.lib.specs import ModelSpec, load_specs

GROUP = "registry"


def champion_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_champion_model"])


def promote_version(registry, spec_name: str, version: int, run_id: str, reason: str):
    """Promote a version whose stored gate report passed (the registry refuses otherwise)."""
    candidate = registry.get_version(spec_name, version)
    if not candidate.gate_report:
        raise dg.Failure(f"{spec_name} v{version} has no gate report: run its `{GATE_CHECK}` check first")
    return registry.promote(spec_name, version, gate_report=candidate.gate_report, run_id=run_id, reason=reason)


def rollback_version(registry, spec_name: str, version: int, run_id: str, reason: str):
    """Re-point the champion to an earlier version after verifying its artefact and smoke-scoring it on the
    most recent training-set snapshot."""
    def verify(mv):
        model_ops.load_model(mv)  # sha256 verified: ArtifactIntegrityError on any changed byte
        current = registry.get_alias(spec_name, model_ops.CHAMPION)  # its snapshot holds the most recent data
        snapshot = (current or mv).fingerprint["training_set_snapshot"]
        model_ops.smoke_test(mv, pd.read_parquet(snapshot))

    return registry.rollback(spec_name, version, verify=verify, reason=reason, run_id=run_id)


def _alias_log_md(registry, spec_name: str, limit: int = 10) -> str:
    rows = registry.alias_history(spec_name)[-limit:]
    lines = ["| at | alias | from | to | action | reason | run |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e.at} | {e.alias} | {e.from_version or '-'} | {e.to_version or '-'} | {e.action} | {e.reason} | "
              f"{(e.run_id or '')[:8]} |" for e in rows]
    return "\n".join(lines)


def build_champion_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=champion_key(spec),
        group_name=GROUP,
        kinds={"lightgbm", "sqlite"},
        deps=[candidate_key(spec)],
        output_required=False,  # no materialization when there is nothing to promote
        description=f"The `champion` alias of `{spec.name}` in the model registry. Materializing it promotes the "
        f"latest candidate — only when its `{GATE_CHECK}` check passed (a blocking check: a failed gate stops "
        "this asset; the registry refuses a report that did not pass).",
    )
    def _champion(context: dg.AssetExecutionContext, model_registry: ModelRegistryResource):
        registry = model_registry.registry()
        version = current_metadata(context.instance, context.run.run_id, candidate_key(spec))["version"]
        candidate = registry.get_version(spec.name, version)
        current = registry.get_alias(spec.name, model_ops.CHAMPION)
        if current is not None and current.version == version:
            context.log.info(f"{spec.name}: v{version} is already the champion; nothing to promote")
            return
        report = candidate.gate_report or {}
        if not report.get("passed"):
            # Reached only outside a run that also gated (e.g. automation after a failed gate): keep the champion.
            context.log.warning(f"{spec.name}: v{version} not promoted, its gate did not pass: "
                                f"{'; '.join(report.get('reasons', [])) or 'no gate report'}")
            return
        trigger = context.run.tags.get("batch_platform/trigger", "run")
        event = promote_version(registry, spec.name, version, context.run.run_id, f"gate passed ({trigger})")
        champion = registry.get_alias(spec.name, model_ops.CHAMPION)
        yield dg.MaterializeResult(
            metadata={
                "champion_version": champion.version,
                "sha256": champion.sha256,
                "promoted_from": event.from_version or 0,
                "alias_log": dg.MetadataValue.md(_alias_log_md(registry, spec.name)),
            }
        )

    return _champion


class ModelOpConfig(dg.Config):
    spec: str = Field(description="Model spec name, e.g. flight_delay.")
    version: int = Field(description="Model version.")
    reason: str = Field(default="manual", description="Why (recorded in the alias log).")


@dg.op(description="Promote a version whose gate passed to champion.")
def promote_model(context: dg.OpExecutionContext, config: ModelOpConfig, model_registry: ModelRegistryResource):
    event = promote_version(model_registry.registry(), config.spec, config.version, context.run.run_id, config.reason)
    context.log.info(f"{config.spec}: champion {event.from_version} -> {event.to_version}")


@dg.op(description="Roll champion back to an earlier version (artefact sha256 verified, smoke-scored first).")
def rollback_model(context: dg.OpExecutionContext, config: ModelOpConfig, model_registry: ModelRegistryResource):
    event = rollback_version(model_registry.registry(), config.spec, config.version, context.run.run_id, config.reason)
    context.log.info(f"{config.spec}: champion {event.from_version} -> {event.to_version} (rollback)")


@dg.job(description="Promote a gated model version to champion (config: spec, version, reason).")
def models_promote():
    promote_model()


@dg.job(description="Roll the champion back to an earlier, verified version (config: spec, version, reason).")
def models_rollback():
    rollback_model()


@dg.definitions
def champions() -> dg.Definitions:
    return dg.Definitions(assets=[build_champion_asset(spec) for spec in load_specs().values()],
                          jobs=[models_promote, models_rollback])
