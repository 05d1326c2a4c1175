"""Feast definitions declared in YAML (``<feature repo>/features.yaml``), and the served-prediction views.

A feature repository needs no Python: ``features.yaml`` declares

* ``entities``: ``name`` (the join key, a string column of the feature tables), ``description``;
* ``feature_views``: ``name`` (= the dbt feature table it reads: the folder ``$BATCH_PLATFORM_FEATURES_DIR/<name>/``
  or the file ``<name>.parquet``, valid from its ``feature_ts``), ``entity``, ``ttl_days`` (0: no expiry),
  ``description``, ``table_description``, and ``features``: column -> Feast type (``Int64``, ``Float64``, ``String``,
  ``UnixTimestamp``, ``Bool``);
* ``feature_services``: ``name``, ``description``, ``views``: a view's name (every feature) or
  ``{view: NAME, exclude: [...]}`` / ``{view: NAME, include: [...]}``.

:func:`declared_objects` builds the Feast objects from it (checked: named errors, file and field);
:func:`prediction_objects` builds, per model spec, the push-fed view its batch scoring writes served predictions
to. :func:`batch_platform.lib.feature_store.load_repo_contents` adds both to whatever Python the repository holds.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from batch_platform.lib.feast_import import import_feast
from batch_platform.lib.feature_generations import feature_table

DECLARATION = "features.yaml"
FEATURES_DIR_VAR = "BATCH_PLATFORM_FEATURES_DIR"
EXPORT_DIR_VAR = "BATCH_PLATFORM_PREDICTIONS_EXPORT_DIR"
KIND_TAG = "batch_platform/kind"
PREDICTIONS_KIND = "predictions"
"""Prediction views carry the tag ``batch_platform/kind: predictions``: kept out of the feature-definitions
fingerprint models are trained against."""

_TOP = {"entities", "feature_views", "feature_services"}
_ENTITY = {"name", "description"}
_VIEW = {"name", "entity", "ttl_days", "description", "table_description", "features"}
_SERVICE = {"name", "description", "views"}
_PROJECTION = {"view", "include", "exclude"}


class FeastDeclarationError(ValueError):
    """``features.yaml`` cannot be used; ``path`` and ``field`` point at it."""

    def __init__(self, path: Path | str, field: str, message: str):
        self.path, self.field = str(path), field
        super().__init__(f"FeastDeclarationError in {path}, field {field}: {message}")


def _dir(var: str) -> Path:
    if not os.environ.get(var):
        raise RuntimeError(f"{var} is not set (defaults: batch_platform.settings.export_defaults())")
    return Path(os.path.abspath(os.path.expanduser(os.environ[var])))


def _types() -> dict[str, Any]:
    import_feast()
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    return {"Int64": Int64, "Float64": Float64, "String": String, "UnixTimestamp": UnixTimestamp, "Bool": Bool}


def declared_objects(repo_dir: Path | str) -> dict[str, Any]:
    """The Feast objects ``<repo_dir>/features.yaml`` declares, by Python-style name (``<view>_source`` for a view's
    file source); empty when the repository has no such file."""
    path = Path(repo_dir) / DECLARATION
    if not path.exists():
        return {}
    import_feast()
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FeastDeclarationError(path, "(file)", f"is not YAML: {str(e).splitlines()[0]}") from e

    def fail(field: str, message: str):
        raise FeastDeclarationError(path, field, message)

    def fields(mapping: Any, allowed: set[str], where: str, required: set[str]) -> dict:
        if not isinstance(mapping, dict):
            fail(where, f"is not a mapping: {mapping!r}")
        unknown = sorted(set(mapping) - allowed)
        if unknown:
            fail(f"{where}.{unknown[0]}" if where else unknown[0], f"unknown field(s) {unknown}; known: {sorted(allowed)}")
        missing = sorted(k for k in required if mapping.get(k) in (None, "", [], {}))
        if missing:
            fail(f"{where}.{missing[0]}" if where else missing[0], "is required")
        return mapping

    fields(raw, _TOP, "", {"entities", "feature_views"})
    types = _types()
    features_dir = _dir(FEATURES_DIR_VAR)
    out: dict[str, Any] = {}
    entities: dict[str, Any] = {}
    for i, e in enumerate(raw["entities"]):
        fields(e, _ENTITY, f"entities[{i}]", {"name"})
        entities[e["name"]] = out[e["name"]] = Entity(
            name=e["name"], join_keys=[e["name"]], value_type=ValueType.STRING, description=e.get("description", ""))
    views: dict[str, Any] = {}
    for i, v in enumerate(raw["feature_views"]):
        where = f"feature_views[{i}]"
        fields(v, _VIEW, where, {"name", "entity", "features"})
        if v["entity"] not in entities:
            fail(f"{where}.entity", f"{v['entity']!r} is not a declared entity ({sorted(entities)})")
        ttl = v.get("ttl_days", 0)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            fail(f"{where}.ttl_days", f"is not a whole number of days >= 0: {ttl!r}")
        if not isinstance(v["features"], dict):
            fail(f"{where}.features", "is a mapping of column -> Feast type")
        schema = [Field(name=v["entity"], dtype=types["String"])]
        for name, kind in v["features"].items():
            if kind not in types:
                fail(f"{where}.features.{name}", f"{kind!r} is not one of {sorted(types)}")
            schema.append(Field(name=name, dtype=types[kind]))
        source = FileSource(name=v["name"], path=str(feature_table(features_dir, v["name"])),
                            file_format=ParquetFormat(), timestamp_field="feature_ts",
                            description=v.get("table_description", ""))
        views[v["name"]] = out[v["name"]] = FeatureView(
            name=v["name"], entities=[entities[v["entity"]]], ttl=timedelta(days=ttl), schema=schema,
            source=source, online=True, description=v.get("description", ""))
        out[f"{v['name']}_source"] = source
    for i, s in enumerate(raw.get("feature_services") or []):
        where = f"feature_services[{i}]"
        fields(s, _SERVICE, where, {"name", "views"})
        projections = []
        for j, p in enumerate(s["views"]):
            at = f"{where}.views[{j}]"
            if isinstance(p, str):
                p = {"view": p}
            fields(p, _PROJECTION, at, {"view"})
            view = views.get(p["view"])
            if view is None:
                fail(f"{at}.view", f"{p['view']!r} is not a declared feature view ({sorted(views)})")
            names = [f.name for f in view.features]
            chosen = p.get("include") or [n for n in names if n not in (p.get("exclude") or [])]
            unknown = [n for n in [*(p.get("include") or []), *(p.get("exclude") or [])] if n not in names]
            if unknown:
                fail(at, f"feature(s) {unknown} are not in view {view.name}")
            projections.append(view if chosen == names else view[chosen])
        out[s["name"]] = FeatureService(name=s["name"], features=projections, description=s.get("description", ""))
    return out


def prediction_objects() -> dict[str, Any]:
    """Per model spec, the push-fed view of its served predictions (``<spec>_predictions``, looked up by the spec's
    entity key; TTL ``scoring.online_ttl_hours``), its push source and the key's entity. The push source's batch
    source is the parquet export of the spec's prediction table (``$BATCH_PLATFORM_PREDICTIONS_EXPORT_DIR``); the
    views are fed by push only, never materialized from it."""
    import_feast()
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.data_format import ParquetFormat

    from batch_platform.lib.specs import load_specs

    types = _types()
    fields = [Field(name="score", dtype=types["Float64"]),
              Field(name="decision", dtype=types["Int64"]),  # 1/0 at the spec's decision threshold
              Field(name="model_version", dtype=types["Int64"]),
              Field(name="model_sha256", dtype=types["String"]),
              Field(name="alias", dtype=types["String"]),
              Field(name="run_id", dtype=types["String"]),
              Field(name="partition_date", dtype=types["String"]),
              Field(name="fallback_reason", dtype=types["String"]),  # empty when the model scored the row
              Field(name="scored_at", dtype=types["UnixTimestamp"])]
    export_dir = _dir(EXPORT_DIR_VAR)
    out: dict[str, Any] = {}
    entities: dict[str, Any] = {}
    for spec in load_specs().values():
        key = spec.entity.key
        if key not in entities:
            entities[key] = out[f"{key}_entity"] = Entity(
                name=key, join_keys=[key], value_type=ValueType.STRING,
                description=f"Prediction key of model specs keyed by {key}.")
        push = PushSource(name=f"{spec.name}_predictions_push", batch_source=FileSource(
            name=f"{spec.name}_predictions_export", path=str(export_dir / f"{spec.name}.parquet"),
            file_format=ParquetFormat(), timestamp_field="event_timestamp"))
        out[f"{spec.name}_predictions_push"] = push
        out[f"{spec.name}_predictions"] = FeatureView(
            name=f"{spec.name}_predictions", entities=[entities[key]],
            ttl=timedelta(hours=spec.scoring.online_ttl_hours), schema=fields, source=push, online=True,
            tags={KIND_TAG: PREDICTIONS_KIND},
            description=f"Latest served prediction of `{spec.name}` per {key} (pushed by batch scoring).")
    return out


__all__ = ["FeastDeclarationError", "declared_objects", "prediction_objects"]
