"""The daemon's side of dead-run repair: a run whose process was killed (and which therefore never reports its
end) is marked failed and its pool slots are freed within a minute, so the warehouse pool is never held by a
process that no longer exists. Always on, in both clock modes."""

import dagster as dg

from batch_platform import run_health


@dg.sensor(
    name="dead_run_repair",
    description="Marks runs whose process is gone as failed and frees the pool slots they (or ended runs) hold.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def dead_run_repair(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    health = run_health.repair(context.instance)
    if not health.wedged:
        return dg.SkipReason("no dead run, no stale pool slot")
    for line in health.lines():
        context.log.warning(f"repaired: {line}")
    return dg.SkipReason("repaired: " + "; ".join(health.lines()))
