"""Training sets, one asset per model spec (``batch_platform/models/*.yaml``).

Each is the spec's entity/label frame, timestamped at each row's prediction cutoff, joined to features through
Feast's point-in-time ``get_historical_features``, with the label embargo applied. Three blocking checks:

- ``no_feature_or_label_leakage``: no feature was used before it was valid and no label before it was final;
- ``training_serving_skew``: rows that were scored before hold the feature values scoring served for them
  (``predictions.<spec>_served_features``, see :mod:`batch_platform.lib.skew`);
- ``no_outcome_in_missingness``: whether a join key or passthrough column (known the evening before) is missing
  does not predict the label (see :mod:`batch_platform.lib.missingness`).
"""

import datetime as dt
import shutil

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.feature_store.assets import feast_feature_definitions
from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.resources import FeatureStoreResource, WarehouseResource
from batch_platform.lib import faults, missingness, scoring, skew, training_set_build
from batch_platform.lib import warehouse as warehouse_lib
from batch_platform.lib.specs import ModelSpec, load_specs

GROUP = "training"
LEAKAGE_CHECK = "no_feature_or_label_leakage"
SKEW_CHECK = "training_serving_skew"
MISSINGNESS_CHECK = "no_outcome_in_missingness"
LABEL_MEAN_ENTRY = {False: "positive_rate", True: "label_mean"}  # keyed by spec.is_regression


class TrainingSetConfig(dg.Config):
    training_cutoff: str | None = Field(
        default=None,
        description="Build the set as of this instant (ISO 8601, with offset). Default: when the newest loaded "
        "batch was published (the time model's publication times, as ingest recorded them).",
    )


def default_training_cutoff(con) -> dt.datetime:
    """The data's 'now': when the newest loaded batch was published (time model, recorded by ingest)."""
    at = warehouse_lib.newest_publication(con)
    if at is None:
        raise dg.Failure("nothing is loaded: ingest some flight days first")
    return at


def training_set_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_training_set"])


def build_training_set_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = training_set_key(spec)

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"feast", "parquet"},
        deps=[get_asset_key_for_model([dbt_feature_models], spec.label.model), feast_feature_definitions],
        pool=settings.WAREHOUSE_POOL,
        check_specs=[
            dg.AssetCheckSpec(LEAKAGE_CHECK, asset=key, blocking=True,
                              description="Every feature valid at its row's prediction cutoff; every label final "
                              "at the training cutoff."),
            dg.AssetCheckSpec(SKEW_CHECK, asset=key, blocking=True, description=(
                f"Rows scored before hold the values scoring served for them (`{scoring.served_features_table(spec)}`"
                f", matched on {spec.entity.key} and prediction cutoff): at most {skew.THRESHOLD:.1%} of them differ "
                "in any column (floats within a relative 1e-9).")),
            dg.AssetCheckSpec(MISSINGNESS_CHECK, asset=key, blocking=True, description=(
                "Whether a column known the evening before (join keys, passthrough features) is missing does not "
                f"predict the label: fails when both groups have {missingness.MIN_GROUP_ROWS}+ rows, "
                f"|z| >= {missingness.Z_THRESHOLD:g} and the label rates differ by at least max("
                f"{missingness.MIN_ABS_DIFF}, {missingness.MIN_REL_DIFF} x the overall rate).")),
        ],
        description=f"Point-in-time training set for `{spec.name}`: {spec.description.strip()} Label: "
        f"{spec.label.definition}. Features: Feast service `{spec.feature_service}` as of "
        f"{spec.cutoff.days_before} day(s) before at {spec.cutoff.local_time} {spec.cutoff.timezone}; labels "
        f"final {spec.label.embargo_days} day(s) after.",
        metadata={"model_spec": dg.MetadataValue.json(spec.model_dump()), "spec_fingerprint": spec.fingerprint},
    )
    def _training_set(
        context: dg.AssetExecutionContext,
        config: TrainingSetConfig,
        warehouse: WarehouseResource,
        feature_store: FeatureStoreResource,
    ):
        directory = settings.artifacts_dir() / "training_sets" / spec.name
        folder = training_set_build.staging_folder(directory)
        try:
            with warehouse.connect(read_only=True) as con:
                cutoff = (dt.datetime.fromisoformat(config.training_cutoff) if config.training_cutoff
                          else default_training_cutoff(con))
                staged = training_set_build.stage(con, spec, cutoff, folder)
            if not staged.rows:
                raise dg.Failure(f"{spec.name}: no labelled rows in the windows {spec.split_days(cutoff)}")
            client = feature_store.client()
            built = training_set_build.build(
                staged, client, directory,
                progress=lambda done, total: context.log.info(f"{spec.name}: {done} / {total} rows joined"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        faults.point("train.snapshot_written")
        summary, snapshot = built.summary, built.snapshot
        report, skew_report, missing_report = built.leakage, built.skew, built.missingness
        context.log.info(f"{spec.name}: {summary.rows} rows, leakage check: {report.describe()}; skew: "
                         f"{skew_report.describe()}; missingness: {missing_report.describe()}")
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                LABEL_MEAN_ENTRY[spec.is_regression]: summary.label_mean,
                "first_day": summary.first_day.isoformat(),
                "last_day": summary.last_day.isoformat(),
                "rows_per_split": dg.MetadataValue.json(summary.rows_per_split),
                "training_cutoff": cutoff.isoformat(),
                "data_fingerprint": summary.fingerprint,
                "feature_definitions_fingerprint": client.definitions_fingerprint(),
                "spec_fingerprint": spec.fingerprint,
                "snapshot": dg.MetadataValue.path(str(snapshot)),
                "columns": dg.MetadataValue.json(built.columns),
            }
        )
        yield dg.AssetCheckResult(
            check_name=LEAKAGE_CHECK,
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=report.describe(),
            metadata={
                "rows_checked": report.rows_checked,
                "valid_from_columns": dg.MetadataValue.json(report.valid_from_columns),
                "feature_violations": dg.MetadataValue.json(report.feature_violations),
                "label_violations": report.label_violations,
                "examples": dg.MetadataValue.json(report.examples),
            },
        )
        yield dg.AssetCheckResult(
            check_name=SKEW_CHECK,
            passed=skew_report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=skew_report.describe(),
            metadata={
                "rows_compared": skew_report.rows_compared,
                "rows_mismatched": skew_report.rows_mismatched,
                "mismatch_share": skew_report.mismatch_share,
                "threshold": skew_report.threshold,
                "columns": dg.MetadataValue.json(skew_report.column_mismatches),
                "columns_compared": len(skew_report.columns_compared),
                "served_rows_read": skew_report.rows_served,
                "examples": dg.MetadataValue.json(skew_report.examples),
                "served_features_table": scoring.served_features_table(spec),
            },
        )
        yield dg.AssetCheckResult(
            check_name=MISSINGNESS_CHECK,
            passed=missing_report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=missing_report.describe(),
            metadata={
                "columns": dg.MetadataValue.json(missing_report.table()),
                "failed_columns": dg.MetadataValue.json(missing_report.failed),
                LABEL_MEAN_ENTRY[spec.is_regression]: missing_report.label_mean,
                "min_rate_difference": missing_report.min_difference,
            },
        )

    return _training_set


@dg.definitions
def training_sets() -> dg.Definitions:
    """One training-set asset per spec; specs are read whenever the definitions load (no Python per model)."""
    return dg.Definitions(assets=[build_training_set_asset(spec) for spec in load_specs().values()])
