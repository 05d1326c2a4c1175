"""The scoring stage: one daily-partitioned prediction asset per model spec, scored by the registry's champion,
stored in ``predictions.<spec>`` (one atomic swap per partition), pushed to the online store and checked for its
cold-start share. See :mod:`batch_platform.lib.scoring` and :mod:`batch_platform.lib.serving`."""

import datetime as dt

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.feature_store.assets import feast_feature_definitions
from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.registry.assets import champion_key
from batch_platform.defs.resources import DaskResource, FeatureStoreResource, ModelRegistryResource, WarehouseResource
from batch_platform.lib import dask_scoring, drift, drift_report, faults, performance_estimate, scoring, serving
from batch_platform.lib.specs import ModelSpec, load_specs
from batch_platform.lib.time_model import load_time_model

GROUP = "scoring"
FALLBACK_CHECK = "fallback_share_within_limit"
KEYS_CHECK = "one_row_per_key"
DRIFT_CHECK = "feature_drift"
DRIFT_SAMPLE_ROWS = 20_000
SCORING_JOB = "batch_scoring"


class ScoringConfig(dg.Config):
    chunk_rows: int | None = Field(default=None, description="Rows per scoring chunk (default: the spec's).")
    push_online: bool = Field(default=True, description="Push the stored predictions to the online store.")


def frame_batch_key(spec: ModelSpec) -> dg.AssetKey:
    """The raw daily table the scoring frame of a day is built from (the time model's frame feed)."""
    return dg.AssetKey(["raw", load_time_model().spec.frames[spec.scoring.model].feed])


def predictions_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_predictions"])


def build_predictions_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = predictions_key(spec)
    fb = spec.scoring.fallback

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"lightgbm", "duckdb", "feast"},
        partitions_def=daily_partitions,
        # the day's frame batch (the flight schedule of D, published the day before) is a partition dependency of
        # its own, so "D's schedule is loaded" is visible to automation and lineage (the dbt frame has no partitions)
        deps=[champion_key(spec), get_asset_key_for_model([dbt_feature_models], spec.scoring.model),
              feast_feature_definitions, dg.AssetDep(frame_batch_key(spec))],
        pool=settings.WAREHOUSE_POOL,
        check_specs=[
            dg.AssetCheckSpec(FALLBACK_CHECK, asset=key, partitions_def=daily_partitions, description=(
                f"At most {fb.max_share:.0%} of the day's rows got the cold-start fallback (no features from "
                f"{', '.join(fb.required_feature_views)})")),
            dg.AssetCheckSpec(KEYS_CHECK, asset=key, partitions_def=daily_partitions, description=(
                f"The stored partition has exactly one row per {spec.entity.key}, as many as were scored")),
            dg.AssetCheckSpec(DRIFT_CHECK, asset=key, partitions_def=daily_partitions, description=(
                "Evidently drift of the day's scored features and score vs the reference frozen with the model "
                "version: normed Wasserstein per numeric feature, PSI per categorical feature and for the score "
                "binned at frozen deciles, each ERROR beyond "
                f"{spec.monitoring.drift.calibration_ratio:g}x its largest training-day distance (never below "
                f"{spec.monitoring.drift.wasserstein_error:g} / {spec.monitoring.drift.psi_error:g}); a missing "
                "share far above the reference's, or a column gone NULL, is ERROR. The day is ERROR on a "
                f"missing-share or score ERROR, or {spec.monitoring.drift.min_error_columns}+ feature groups in "
                "ERROR (correlated columns count once); HTML report linked in the metadata")),
        ],
        description=f"Predictions of `{spec.name}` for every {spec.entity.key} of the day in "
        f"`marts.{spec.scoring.model}`, scored by the registry's `champion` (pinned at run start) with features "
        f"as of {spec.cutoff.days_before} day(s) before at {spec.cutoff.local_time}. Stored in "
        f"`{scoring.table_name(spec)}` (partition replaced in one transaction), served online through the Feast "
        f"view `{serving.view_name(spec)}` (TTL {spec.scoring.online_ttl_hours:g} h). A `challenger`, when set, "
        f"scores the same rows into `{scoring.table_name(spec, shadow=True)}` (never served). The feature values "
        f"the champion was given are stored per row in `{scoring.served_features_table(spec)}` (same transaction), "
        "for the training set's skew check.",
        metadata={"table": scoring.table_name(spec), "shadow_table": scoring.table_name(spec, shadow=True),
                  "served_features_table": scoring.served_features_table(spec),
                  "online_view": serving.view_name(spec)},
    )
    def _predictions(
        context: dg.AssetExecutionContext,
        config: ScoringConfig,
        warehouse: WarehouseResource,
        feature_store: FeatureStoreResource,
        model_registry: ModelRegistryResource,
        dask: DaskResource,
    ):
        day = dt.date.fromisoformat(context.partition_key)
        client = feature_store.client()

        def progress(event: str, info: dict) -> None:
            faults.point(f"score.{event}")
            if event == "chunk":
                context.log.info(f"{spec.name} {day}: {info['done']} / {info['total']} rows scored")
            elif event == "pinned":
                context.log.info(f"{spec.name}: champion v{info['champion']} pinned for this run"
                                 + (f", challenger v{info['challenger']} (shadow)" if info["challenger"] else ""))

        try:
            with dask.client() as cluster:  # predictions on the Dask cluster when one is configured
                result = scoring.score_partition(
                    spec=spec, day=day, connect=warehouse.connect, feature_store=client,
                    registry=model_registry.registry(), staging_dir=settings.artifacts_dir() / "scoring_staging",
                    run_id=context.run.run_id, chunk_rows=config.chunk_rows, on_event=progress,
                    sample_rows=DRIFT_SAMPLE_ROWS,
                    predict=dask_scoring.ClusterScorer(cluster) if cluster is not None else None,
                )
        except scoring.ScoringError as e:
            raise dg.Failure(f"{type(e).__name__}: {e}") from e

        pushed = 0
        with warehouse.connect(read_only=True) as con:
            stored_rows, duplicates = scoring.partition_counts(con, spec, day)
            if config.push_online:
                pushed = serving.push_partition(con, client, spec, day)
            scoring.export_predictions(con, spec, settings.predictions_export_dir() / f"{spec.name}.parquet")
        context.log.info(f"{spec.name} {day}: {result.rows} rows stored, {pushed} pushed online, "
                         f"{result.fallback_rows} fallback")

        drift_check = _drift_check(context, spec, day, result, model_registry)
        estimate = _performance_estimate(spec, result, model_registry)
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows,
                "model_version": result.champion_version,
                "scored_on": dask.runs_on,
                "model_sha256": result.champion_sha256,
                "prediction_cutoff": result.prediction_cutoff.isoformat(),
                "scored_at": result.scored_at.isoformat(),
                "feature_definitions_fingerprint": result.feature_definitions_fingerprint,
                "score_mean": result.score_mean,
                "decision_rate": result.decision_rate if result.decision_rate is not None else float("nan"),
                "fallback_rows": result.fallback_rows,
                "fallback_share": result.fallback_share,
                "replaced_rows": result.replaced_rows,
                "pushed_online": pushed,
                "shadow_version": result.shadow_version or 0,
                "canary_version": result.canary_version or 0,
                "canary_rows": result.canary_rows,
                "chunks": result.chunks,
                "timings_s": dg.MetadataValue.json(result.timings),
                "table": scoring.table_name(spec),
                "served_features_table": result.served_features_table,
                **estimate,
            }
        )
        yield dg.AssetCheckResult(
            check_name=FALLBACK_CHECK,
            passed=result.fallback_share <= fb.max_share,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{result.fallback_rows} of {result.rows} rows ({result.fallback_share:.1%}) fell back; "
            f"limit {fb.max_share:.0%}",
            metadata={"fallback_share": result.fallback_share, "max_share": fb.max_share,
                      "fallback_rows": result.fallback_rows,
                      "by_reason": dg.MetadataValue.json(result.fallback_by_reason),
                      "rate_label_days": f"{result.fallback_label_days[0]} .. {result.fallback_label_days[1]}"},
        )
        yield dg.AssetCheckResult(
            check_name=KEYS_CHECK,
            passed=duplicates == 0 and stored_rows == result.rows,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{stored_rows} stored rows, {duplicates} duplicate key(s), {result.rows} scored",
            metadata={"stored_rows": stored_rows, "duplicate_keys": duplicates},
        )
        yield drift_check

    return _predictions


def _performance_estimate(spec: ModelSpec, result: scoring.ScoringResult,
                          model_registry: ModelRegistryResource) -> dict:
    """The gate metric the day is expected to reach, from the champion's scores and its frozen calibration, before
    any label exists (``lib/performance_estimate.py``); the accuracy asset shows it beside the realised value."""
    version = model_registry.registry().get_version(spec.name, result.champion_version)
    calibration = performance_estimate.calibration_of(version.metrics)
    if calibration is None or result.sample is None or result.sample.empty:
        return {}
    metric = spec.gate.metric
    est = performance_estimate.estimate(result.sample[scoring.SAMPLE_SCORE].to_numpy(), calibration,
                                        metrics=(metric,), draws=300, seed=0).metrics[metric]
    if est.expected is None:
        return {}
    return {f"estimated_{metric}": est.expected,
            f"estimated_{metric}_interval": dg.MetadataValue.json([est.low, est.high])}


def _drift_check(context, spec: ModelSpec, day: dt.date, result: scoring.ScoringResult,
                 model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    version = model_registry.registry().get_version(spec.name, result.champion_version)
    common = {"partition": day.isoformat(), "model_version": version.version}
    ref_path = version.fingerprint.get("drift_reference")
    if not ref_path:
        return dg.AssetCheckResult(check_name=DRIFT_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"v{version.version} has no drift reference (trained before "
                                   "references were frozen): retrain to monitor drift", metadata=common)
    if result.sample is None or result.sample.empty:
        return dg.AssetCheckResult(check_name=DRIFT_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="no model-scored rows to test (every row fell back)",
                                   metadata=common)
    thresholds = drift.DriftThresholds.from_spec(spec.monitoring.drift)
    reference = drift.load_reference(ref_path, version.fingerprint["drift_reference_sha256"])
    html = settings.artifacts_dir() / "drift_reports" / spec.name / day.isoformat() / f"{context.run.run_id}.html"
    features = result.sample.drop(columns=[scoring.SAMPLE_SCORE])
    scores = result.sample[scoring.SAMPLE_SCORE].to_numpy()
    report = drift.evaluate(reference, features, scores, thresholds)
    # Evidently's report is rendered by the report server when its link is first opened
    drift_report.save_inputs(html, reference, ref_path, version.fingerprint["drift_reference_sha256"], features,
                             scores, thresholds)
    context.log.info(f"{spec.name} {day} drift: {report.severity} — {report.describe()}")

    def _num(v, fmt=".3g"):
        return "" if v is None else f"{v:{fmt}}"

    table = "\n".join(
        ["| column | test | value | WARN at | ERROR at | severity | group | ref mean | cur mean |",
         "|---|---|---|---|---|---|---|---|---|"]
        + [f"| {c.column} | {c.method} | {c.value:.3f} | {_num(c.warn_at, '.3f')} | {_num(c.error_at, '.3f')} | "
           f"{c.severity} | {c.group or ''} | {_num(c.reference_mean)} | {_num(c.current_mean)} |"
           for c in sorted(report.columns, key=lambda c: (-drift.RANK[c.severity], c.column, c.method))])
    return dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR if report.severity == drift.ERROR else dg.AssetCheckSeverity.WARN,
        description=report.describe(),
        metadata={
            **common,
            "drift_severity": report.severity,
            "error_reasons": dg.MetadataValue.json(report.reasons()),
            "error_columns": dg.MetadataValue.json(sorted({c.column for c in report.flagged(drift.ERROR)})),
            "warn_columns": dg.MetadataValue.json(sorted({c.column for c in report.flagged(drift.WARN)})),
            "error_groups": dg.MetadataValue.json(report.error_groups()),
            "reference_calibrated": report.calibrated,
            "columns_tested": len({c.column for c in report.columns}),
            "tests": len(report.columns),
            "rows_current": report.n_current,
            "rows_reference": report.n_reference,
            "statistics": dg.MetadataValue.md(table),
            "column_values": dg.MetadataValue.json(report.values()),
            "html_report": dg.MetadataValue.path(str(html)),
            "html_report_url": dg.MetadataValue.url(settings.report_url(html)),
            "reference": dg.MetadataValue.path(str(ref_path)),
        },
    )


batch_scoring_job = dg.define_asset_job(
    SCORING_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=daily_partitions,
    description="Score one flight day for every spec: champion pinned at start, atomic partition swap, online "
    "push, drift and fallback checks, shadow scoring by the challenger.",
)


@dg.definitions
def predictions() -> dg.Definitions:
    return dg.Definitions(assets=[build_predictions_asset(spec) for spec in load_specs().values()],
                          jobs=[batch_scoring_job])
