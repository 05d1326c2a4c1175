"""Jobs that span stages."""

import dagster as dg

from batch_platform.defs.features.assets import dbt_feature_models

features_and_training_sets_job = dg.define_asset_job(
    "features_and_training_sets",
    selection=dg.AssetSelection.assets(dbt_feature_models) | dg.AssetSelection.groups("feature_store", "training"),
    description="dbt build (features + tests), feast apply, online-store materialization, and every model "
    "spec's point-in-time training set.",
)
