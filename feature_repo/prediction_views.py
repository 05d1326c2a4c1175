"""Served predictions: one push-fed feature view per model spec (``batch_platform/models/*.yaml``).

The batch scoring asset writes a day's predictions to the warehouse, then pushes them through the view's
PushSource into the online store, so ``<spec>_predictions:score`` is looked up by the spec's entity key like any
feature. The view's TTL is the spec's ``scoring.online_ttl_hours`` (about 1.5 batch intervals): a prediction older
than that is not served (the lookup says it expired). Event timestamp = when the row was scored.

The batch source is the parquet export of the spec's prediction table
(``$BATCH_PLATFORM_PREDICTIONS_EXPORT_DIR/<spec>.parquet``, rewritten after each scoring run; not in the features
folder, whose generations are replaced by each feature build). These views are never materialized from it (they are fed by push only) and are
tagged so the platform keeps them out of the feature-definitions fingerprint that models are trained against.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String, UnixTimestamp

from batch_platform.lib.specs import load_specs

KIND_TAG = "batch_platform/kind"  # tag value "predictions" marks these views
EXPORT_DIR_VAR = "BATCH_PLATFORM_PREDICTIONS_EXPORT_DIR"
if not os.environ.get(EXPORT_DIR_VAR):
    raise RuntimeError(f"{EXPORT_DIR_VAR} is not set (defaults: batch_platform.settings.export_defaults())")
EXPORT_DIR = Path(os.path.abspath(os.path.expanduser(os.environ[EXPORT_DIR_VAR])))

PREDICTION_FIELDS = [
    Field(name="score", dtype=Float64),
    Field(name="decision", dtype=Int64),  # 1/0 at the spec's decision threshold; missing when it has none
    Field(name="model_version", dtype=Int64),
    Field(name="model_sha256", dtype=String),
    Field(name="alias", dtype=String),
    Field(name="run_id", dtype=String),
    Field(name="partition_date", dtype=String),
    Field(name="fallback_reason", dtype=String),  # empty when the model scored the row
    Field(name="scored_at", dtype=UnixTimestamp),
]

_entities: dict[str, Entity] = {}
for _spec in load_specs().values():
    _key = _spec.entity.key
    if _key not in _entities:
        _entities[_key] = Entity(name=_key, join_keys=[_key], value_type=ValueType.STRING,
                                 description=f"Prediction key of model specs keyed by {_key}.")
    _push = PushSource(
        name=f"{_spec.name}_predictions_push",
        batch_source=FileSource(
            name=f"{_spec.name}_predictions_export",
            path=str(EXPORT_DIR / f"{_spec.name}.parquet"),
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
        ),
    )
    globals()[f"{_spec.name}_predictions"] = FeatureView(
        name=f"{_spec.name}_predictions",
        entities=[_entities[_key]],
        ttl=timedelta(hours=_spec.scoring.online_ttl_hours),
        schema=PREDICTION_FIELDS,
        source=_push,
        online=True,
        tags={KIND_TAG: "predictions"},
        description=f"Latest served prediction of `{_spec.name}` per {_key} (pushed by batch scoring).",
    )
    globals()[f"{_spec.name}_predictions_push"] = _push
for _key, _entity in _entities.items():
    globals()[f"{_key}_entity"] = _entity
