"""Feast's plugin for the wide-row SQLite online store (:mod:`batch_platform.lib.wide_store`).

Declared in ``feature_repo/feature_store.yaml`` as
``type: batch_platform.lib.feast_wide_store.WideSqliteOnlineStore`` (Feast's documented custom online store
interface: the config class is the store class's name + ``Config`` in the same module). Through it ``feast apply``
creates each view's table, ``feast materialize`` and ``FeatureStore.push`` write rows (Feast's protobuf values
converted to the columns' types), and ``get_online_features`` reads them back as Feast values. The platform's own
bulk writers (:meth:`FeatureStoreClient.materialize`, predictions pushed by ``serving``) write the same rows without
the per-value protobuf round trip; tests prove both paths read back identical through this class.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from feast.entity import Entity
from feast.feature_view import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import NULL_TIMESTAMP_INT_VALUE
from pydantic import StrictStr

from batch_platform.lib import wide_store

STORE_TYPE = "batch_platform.lib.feast_wide_store.WideSqliteOnlineStore"
_PROTO_FIELD = {"FLOAT": "float_val", "DOUBLE": "double_val", "INT32": "int32_val", "INT64": "int64_val",
                "BOOL": "bool_val", "STRING": "string_val", "BYTES": "bytes_val",
                "UNIX_TIMESTAMP": "unix_timestamp_val"}


class WideSqliteOnlineStoreConfig(FeastConfigBaseModel):
    """``online_store:`` block of ``feature_store.yaml`` for the wide-row SQLite store."""

    type: Literal["batch_platform.lib.feast_wide_store.WideSqliteOnlineStore"] = STORE_TYPE
    path: StrictStr = "data/online_store.db"
    """The SQLite file (relative paths are relative to the feature repo)."""


def store_path(config: RepoConfig) -> Path:
    path = Path(config.online_store.path)
    if not path.is_absolute() and config.repo_path is not None:
        path = Path(config.repo_path) / path
    return path


def layout_of(project: str, view: FeatureView) -> wide_store.ViewLayout:
    """The stored layout of a Feast view: its features' value types, join keys and TTL."""
    return wide_store.ViewLayout(
        project=project, view=view.name,
        features={f.name: f.dtype.to_value_type().name for f in view.features},
        join_keys=tuple(view.join_keys),
        ttl_seconds=view.ttl.total_seconds() if view.ttl else None,
    )


def python_value(value: ValueProto) -> Any:
    which = value.WhichOneof("val")
    if which is None:
        return None
    v = getattr(value, which)
    if which == "unix_timestamp_val" and v == NULL_TIMESTAMP_INT_VALUE:  # Feast's NULL timestamp
        return None
    return v


def entity_key_text(key: EntityKeyProto) -> str:
    return wide_store.entity_key_text(list(key.join_keys), [python_value(v) for v in key.entity_values])


class WideSqliteOnlineStore(OnlineStore):
    """One SQLite row per entity key and view; see :mod:`batch_platform.lib.wide_store`."""

    def __init__(self) -> None:
        self._cons: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def _con(self, config: RepoConfig):
        path = store_path(config)
        with self._lock:
            if path not in self._cons:
                self._cons[path] = wide_store.connect(path)
            return self._cons[path]

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], dt.datetime, dt.datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        con = self._con(config)
        layout = layout_of(config.project, table)
        rows = []
        for key, values, event_ts, created_ts in data:
            row = [entity_key_text(key), wide_store.to_epoch_us(event_ts),
                   None if created_ts is None else wide_store.to_epoch_us(created_ts)]
            for name, kind in layout.features.items():
                v = values.get(name)
                row.append(None if v is None else wide_store.column_values(kind, [python_value(v)])[0])
            rows.append(row)
        with wide_store.transaction(con):
            wide_store.write_rows(con, layout, rows)
        if progress:
            progress(len(data))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[dt.datetime | None, dict[str, ValueProto] | None]]:
        layout = layout_of(config.project, table)
        features = [f for f in (requested_features or layout.columns) if f in layout.features]
        reader = wide_store.Reader(self._con(config), layout, features)
        out: list[tuple[dt.datetime | None, dict[str, ValueProto] | None]] = []
        for row in reader.get_many([entity_key_text(k) for k in entity_keys]):
            if row is None:
                out.append((None, None))
                continue
            out.append((row.event_ts, {f: _proto(layout.features[f], row.values[f]) for f in features}))
        return out

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        con = self._con(config)
        for view in tables_to_keep:
            wide_store.apply_view(con, layout_of(config.project, view))
        for view in tables_to_delete:
            wide_store.drop_view(con, config.project, view.name)

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        con = self._con(config)
        for view in tables:
            wide_store.drop_view(con, config.project, view.name)


def _proto(kind: str, value: Any) -> ValueProto:
    """A stored value as Feast's protobuf value (NULL: the empty value Feast reads as None)."""
    if value is None:
        return ValueProto()
    if kind == "UNIX_TIMESTAMP":
        value = int(value.timestamp()) if isinstance(value, dt.datetime) else int(value)
    return ValueProto(**{_PROTO_FIELD[kind]: value})
