"""Jobs that span stages."""

import dagster as dg

from batch_platform.defs.features.assets import dbt_feature_models
from batch_platform.defs.ingest.assets import raw_daily_assets, raw_reference_assets

build_features_job = dg.define_asset_job(
    "build_features",
    # a feature build is one whole dbt generation: every model and every dbt test (the raw sources' included)
    selection=dg.AssetSelection.assets(dbt_feature_models) | dg.AssetSelection.checks(*dbt_feature_models.check_keys)
    | dg.AssetSelection.groups("feature_store")
    | dg.AssetSelection.checks_for_assets(*raw_daily_assets, *raw_reference_assets),
    description="dbt build (the raw sources' tests, then the feature models and their tests, all as checks), "
    "feast apply, online-store materialization.",
)

train_and_gate_job = dg.define_asset_job(
    "train_and_gate",
    selection=dg.AssetSelection.groups("training", "models"),
    description="Training sets, candidate models and their gate checks for every spec. Never promotes: "
    "promotion is the champion assets (`promote_champions`), which a failed gate blocks.",
)

promote_champions_job = dg.define_asset_job(
    "promote_champions",
    selection=dg.AssetSelection.groups("registry"),
    description="Promote each spec's latest candidate whose gate passed.",
)

train_gate_promote_job = dg.define_asset_job(
    "train_gate_promote",
    selection=dg.AssetSelection.groups("training", "models", "registry"),
    description="Training sets → candidates → gate (blocking) → champions, in one run: a failed gate stops the "
    "promotion of that spec.",
)
