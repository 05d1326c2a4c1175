"""Monitoring: production accuracy per scored day once its labels are final (one asset per spec), with a check
against the model version's test-window performance over a rolling window of days (day-block interval). Drift
checks live on the prediction assets (scoring stage)."""

import datetime as dt

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.resources import ModelRegistryResource, WarehouseResource
from batch_platform.defs.scoring.assets import predictions_key
from batch_platform.lib import monitoring, performance_estimate
from batch_platform.lib.specs import ModelSpec, load_specs

GROUP = "monitoring"
ACCURACY_CHECK = "production_accuracy_within_tolerance"


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def accuracy_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_production_accuracy"])


def build_accuracy_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = accuracy_key(spec)

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"duckdb"},
        partitions_def=daily_partitions,
        deps=[predictions_key(spec), get_asset_key_for_model([dbt_feature_models], spec.label.model)],
        check_specs=[dg.AssetCheckSpec(ACCURACY_CHECK, asset=key, partitions_def=daily_partitions, description=(
            f"Production {spec.gate.metric} of each model version that scored the day, over its last "
            f"{spec.monitoring.retrain.window_partitions} days with final labels: the upper end of its day-block "
            f"interval is at most {spec.monitoring.accuracy_tolerance} below the version's test-window "
            f"{spec.gate.metric}"))],
        description=f"`{spec.name}` predictions of the day joined with their outcomes once final ({spec.label.embargo_days} "
        f"day(s) after, {spec.label.final_local_time}): {spec.gate.metric} per model version vs its test-window metric (rolling day-block interval), fallback rows apart and served quality with them; "
        f"rows in `{monitoring.ACCURACY_TABLE}`.",
    )
    def _accuracy(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                  model_registry: ModelRegistryResource):
        day = dt.date.fromisoformat(context.partition_key)
        registry = model_registry.registry()
        versions = registry.list_versions(spec.name)
        reference = {v.version: (v.metrics.get("test") or {}).get(spec.gate.metric) for v in versions}
        calibrations = {v.version: performance_estimate.calibration_of(v.metrics) for v in versions}
        try:
            with warehouse.connect(read_only=True) as con:
                result = monitoring.production_accuracy(con, spec, day, reference, calibrations=calibrations)
        except (monitoring.LabelsNotFinal, monitoring.NoPredictions) as e:
            raise dg.Failure(f"{type(e).__name__}: {e}") from e
        with warehouse.connect() as con:
            monitoring.store_accuracy(con, result, context.run.run_id)
        context.log.info(f"{spec.name} {day}: {result.describe()}")
        champion_rows = max(result.by_version, key=lambda v: v.rows)
        yield dg.MaterializeResult(metadata={
            "metric": spec.gate.metric,
            "value": champion_rows.metric if champion_rows.metric is not None else float("nan"),
            "served_value": _num(champion_rows.served_metric),  # model + fallback rows: what callers got
            "fallback_rows": champion_rows.fallback_rows,
            "window_value": _num((champion_rows.window or {}).get("metric")),
            "window_ci_low": _num((champion_rows.window or {}).get("ci_low")),
            "window_ci_high": _num((champion_rows.window or {}).get("ci_high")),
            "test_window_value": _num(champion_rows.validation_metric),
            # the performance its scores predicted before the labels, and how far the day fell from it
            "estimated_value": _num(champion_rows.estimated_metric),
            "estimate_gap": _num(champion_rows.estimate_gap),
            "model_version": champion_rows.model_version,
            "by_version": dg.MetadataValue.json([vars(v) for v in result.by_version]),
            "labels_final_at": result.labels_final_at.isoformat(),
            "dagster/row_count": sum(v.rows + v.fallback_rows for v in result.by_version),
        })
        yield dg.AssetCheckResult(
            check_name=ACCURACY_CHECK,
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.describe(),
            metadata={
                "partition": day.isoformat(),
                "versions": dg.MetadataValue.json([v.model_version for v in result.by_version]),
                "failed_versions": dg.MetadataValue.json([v.model_version for v in result.by_version
                                                          if not v.passed]),
                "tolerance": spec.monitoring.accuracy_tolerance,
            },
        )

    return _accuracy


@dg.definitions
def production_accuracy() -> dg.Definitions:
    return dg.Definitions(assets=[build_accuracy_asset(spec) for spec in load_specs().values()])
