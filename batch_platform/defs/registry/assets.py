"""The registry stage: champion models (moved by the promotion lifecycle: gate, shadow, canary, rollback) and the
manual promote/rollback jobs."""

import datetime as dt
from pathlib import Path

import dagster as dg
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.resources import ModelRegistryResource, WarehouseResource
from batch_platform.defs.training.models import GATE_CHECK, candidate_key, run_metadata
from batch_platform.lib import lifecycle, model_ops, monitoring, snapshot_matrix
from batch_platform.lib.registry import CANARY
from batch_platform.lib.specs import ModelSpec, load_specs

GROUP = "registry"


def champion_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_champion_model"])


def promote_version(registry, spec_name: str, version: int, run_id: str, reason: str,
                    as_of: dt.datetime | None = None):
    """Promote a version whose stored gate report passed against the current champion (the registry refuses
    otherwise), skipping the lifecycle: the log entry says what was skipped. ``as_of``: the data clock, recorded so
    that the rollback watch covers the new champion as it covers any promotion."""
    candidate = registry.get_version(spec_name, version)
    if not candidate.gate_report:
        raise dg.Failure(f"{spec_name} v{version} has no gate report: run its `{GATE_CHECK}` check first")
    aliases = registry.aliases(spec_name)
    skipped = []
    if aliases.get(model_ops.CHALLENGER) == version:
        skipped.append("its shadow comparison on final labels")
    if aliases.get(CANARY) == version:
        skipped.append("its canary window")
    note = f"manual promotion, skipping {' and '.join(skipped)}" if skipped else "manual promotion"
    event = registry.promote(spec_name, version, gate_report=candidate.gate_report, run_id=run_id,
                             reason=f"{reason} ({note})", evidence={"manual": True, "skipped": skipped,
                                                                     **({"as_of": as_of.isoformat()} if as_of else {})})
    for alias in (CANARY, model_ops.CHALLENGER):
        if aliases.get(alias) == version:
            registry.set_alias(spec_name, alias, None, run_id=run_id, reason=f"v{version} promoted by hand")
    return event


def rollback_version(registry, spec_name: str, version: int, run_id: str, reason: str):
    """Re-point the champion to an earlier version after verifying its artefact and smoke-scoring it on the
    most recent training-set snapshot."""
    return registry.rollback(spec_name, version, verify=_verifier(registry, spec_name), reason=reason, run_id=run_id)


def _alias_log_md(registry, spec_name: str, limit: int = 10) -> str:
    rows = registry.alias_history(spec_name)[-limit:]
    lines = ["| at | alias | from | to | action | reason | run |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e.at} | {e.alias} | {e.from_version or '-'} | {e.to_version or '-'} | {e.action} | {e.reason} | "
              f"{(e.run_id or '')[:8]} |" for e in rows]
    return "\n".join(lines)


def build_champion_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    p = spec.promotion
    lifecycle_text = (
        "promoted when its gate passes (the spec sets promotion.shadow_min_days 0)" if p.shadow_min_days == 0 else
        f"shadow-scored beside the champion until {p.shadow_min_days} day(s) / {p.shadow_min_rows} rows have final "
        f"labels, then compared on the same flights (paired, day-block interval)"
        + (f", then served to {p.canary_share:.0%} of keys for {p.canary_min_days} day(s)" if p.canary_share else "")
        + f", promoted when the comparison confirms it, withdrawn when it refutes it or after {p.shadow_max_days} "
        "days")

    @dg.asset(
        key=champion_key(spec),
        group_name=GROUP,
        kinds={"lightgbm", "sqlite"},
        deps=[candidate_key(spec)],
        pool=settings.WAREHOUSE_POOL,  # reads the shadow evidence from the warehouse
        output_required=False,  # materialized only when the champion alias moves (promotion or rollback)
        description=f"The `champion` alias of `{spec.name}` in the model registry, moved by the promotion "
        f"lifecycle (`lib/lifecycle.py`). A candidate whose `{GATE_CHECK}` check passed becomes the `challenger`: "
        f"{lifecycle_text}. Within {p.rollback_window_days} days of a promotion the new champion is rolled back "
        "when its production metric falls below the previous champion's shadow-era metric beyond its interval"
        + (f" or below {p.rollback_floor}" if p.rollback_floor is not None else "") + ". Every move is in the "
        "alias log with its evidence. Evaluated when a candidate updates (automation) and each day once labels "
        "are final (the `promotion_lifecycle` sensor).",
    )
    def _champion(context: dg.AssetExecutionContext, model_registry: ModelRegistryResource,
                  warehouse: WarehouseResource):
        registry = model_registry.registry()
        md = run_metadata(context.instance, context.run.run_id, candidate_key(spec))
        candidate = registry.get_version(spec.name, md["version"]) if md is not None else None
        trigger = context.run.tags.get("batch_platform/trigger", "run")
        with warehouse.connect(read_only=True) as con:
            now = monitoring.data_clock(con)
            if now is None:
                raise dg.Failure("nothing is loaded: the lifecycle judges days by the data clock")
            result = lifecycle.advance(spec, registry, con, now=now, run_id=context.run.run_id,
                                       verify=_verifier(registry, spec.name), candidate=candidate, trigger=trigger)
        context.log.info(f"{spec.name}: {result.describe()}")
        if not result.champion_moved:
            return
        champion = registry.get_alias(spec.name, model_ops.CHAMPION)
        yield dg.MaterializeResult(
            metadata={
                "champion_version": champion.version,
                "sha256": champion.sha256,
                "previous_version": result.champion_before or 0,
                "action": result.steps[-1].action,
                "reason": result.steps[-1].reason,
                "evidence": dg.MetadataValue.json(result.steps[-1].evidence),
                "alias_log": dg.MetadataValue.md(_alias_log_md(registry, spec.name)),
            }
        )

    return _champion


def _verifier(registry, spec_name: str):
    def verify(mv):
        model_ops.load_model(mv)  # sha256 verified: ArtifactIntegrityError on any changed byte
        current = registry.get_alias(spec_name, model_ops.CHAMPION)  # its snapshot holds the most recent data
        snapshot = (current or mv).fingerprint["training_set_snapshot"]
        model_ops.smoke_test(mv, snapshot_matrix.read_tail(Path(snapshot), model_ops.SMOKE_TEST_ROWS))

    return verify


class ModelOpConfig(dg.Config):
    spec: str = Field(description="Model spec name, e.g. flight_delay.")
    version: int = Field(description="Model version.")
    reason: str = Field(default="manual", description="Why (recorded in the alias log).")


@dg.op(description="Promote a version whose gate passed to champion (watched for rollback like any promotion).",
       pool=settings.WAREHOUSE_POOL)  # reads the data clock
def promote_model(context: dg.OpExecutionContext, config: ModelOpConfig, model_registry: ModelRegistryResource,
                  warehouse: WarehouseResource):
    as_of = None
    if warehouse.db_path.exists():
        with warehouse.connect(read_only=True) as con:
            as_of = monitoring.data_clock(con)
    event = promote_version(model_registry.registry(), config.spec, config.version, context.run.run_id, config.reason,
                            as_of=as_of)
    context.log.info(f"{config.spec}: champion {event.from_version} -> {event.to_version} ({event.reason})")


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
