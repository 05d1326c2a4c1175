"""Training sets, one asset per model spec (``batch_platform/models/*.yaml``).

Each is the spec's entity/label frame, timestamped at each row's prediction cutoff, joined to features through
Feast's point-in-time ``get_historical_features``, with the label embargo applied. A blocking check proves no
feature was used before it was valid and no label before it was final.
"""

import datetime as dt

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.feature_store.assets import feast_feature_definitions
from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.resources import FeatureStoreResource, WarehouseResource
from batch_platform.lib import leakage, training_set
from batch_platform.lib.specs import ModelSpec, load_specs

GROUP = "training"
LEAKAGE_CHECK = "no_feature_or_label_leakage"


class TrainingSetConfig(dg.Config):
    training_cutoff: str | None = Field(
        default=None,
        description="Build the set as of this instant (ISO 8601, with offset). Default: when the newest loaded "
        "flight day's batch landed (the next morning, 06:00 New York).",
    )


def default_training_cutoff(con) -> dt.datetime:
    (last,) = con.execute("SELECT max(_partition_date) FROM raw.flights").fetchall()[0]
    if last is None:
        raise dg.Failure("raw.flights is empty: ingest some flight days first")
    return settings.batch_available_at(last)


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
        check_specs=[dg.AssetCheckSpec(LEAKAGE_CHECK, asset=key, blocking=True,
                                       description="Every feature valid at its row's prediction cutoff; every "
                                       "label final at the training cutoff.")],
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
        with warehouse.connect(read_only=True) as con:
            cutoff = (dt.datetime.fromisoformat(config.training_cutoff) if config.training_cutoff
                      else default_training_cutoff(con))
            labels = training_set.label_frame(con, spec, cutoff)
        if labels.empty:
            raise dg.Failure(f"{spec.name}: no labelled rows in the windows {spec.split_days(cutoff)}")
        client = feature_store.client()
        frame = client.historical_features(labels, spec.feature_service,
                                           timestamp_column=training_set.EVENT_TIMESTAMP)
        summary = training_set.summarize(frame, spec)
        snapshot = training_set.write_snapshot(
            frame, settings.artifacts_dir() / "training_sets" / spec.name, summary.fingerprint
        )
        report = leakage.check_training_set(frame, cutoff, key=spec.entity.key)
        context.log.info(f"{spec.name}: {summary.rows} rows, leakage check: {report.describe()}")
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                "positive_rate": summary.positive_rate,
                "first_day": summary.first_day.isoformat(),
                "last_day": summary.last_day.isoformat(),
                "rows_per_split": dg.MetadataValue.json(summary.rows_per_split),
                "training_cutoff": cutoff.isoformat(),
                "data_fingerprint": summary.fingerprint,
                "feature_definitions_fingerprint": client.definitions_fingerprint(),
                "spec_fingerprint": spec.fingerprint,
                "snapshot": dg.MetadataValue.path(str(snapshot)),
                "columns": dg.MetadataValue.json(list(frame.columns)),
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

    return _training_set


@dg.definitions
def training_sets() -> dg.Definitions:
    """One training-set asset per spec; specs are read whenever the definitions load (no Python per model)."""
    return dg.Definitions(assets=[build_training_set_asset(spec) for spec in load_specs().values()])
