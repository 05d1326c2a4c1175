"""Our small interface over Feast (feast 0.67): apply the repo, point-in-time joins, batched materialization.

The Feast repository is ``feature_repo/`` (entities, parquet sources, views, services; see its
``feature_store.yaml``). This module wraps :class:`feast.FeatureStore` so the rest of the platform never touches
Feast's API directly:

- :meth:`FeatureStoreClient.apply` is ``feast apply`` in-process: it imports the repo's modules the way the CLI
  does (honouring ``.feastignore``) but without ``os.chdir`` and without leaving the modules in ``sys.modules``,
  so a later call sees the current environment (the FileSource paths are read from it at import time).
- :meth:`FeatureStoreClient.historical_features` is ``get_historical_features``'s point-in-time join run as one
  DuckDB ``ASOF LEFT JOIN`` over the views' files (:mod:`batch_platform.lib.pit_join`; views, keys, TTLs and
  types resolved from the registry), with the entity timestamps converted to microsecond UTC (the precision of the
  parquet files) and the caller's rows, order and columns kept. ``engine="feast"`` calls Feast's own
  ``get_historical_features`` (each distinct (keys, timestamp) once) and returns the same frame; the tests hold
  the two equal.
- :meth:`FeatureStoreClient.materialize` walks ``[start, end]`` in windows of ``batch_days`` (Feast's local
  engine writes a whole range in one batch) and reports rows and seconds per window and view.

The online store is the SQLite file of ``feature_store.yaml`` unless ``BATCH_PLATFORM_REDIS`` is set when the
store is opened: then it is Feast's Redis online store at that connection string (the yaml's ``online_store``
block is replaced in the :class:`feast.RepoConfig`, see :func:`repo_config`). Every online write and read goes
through Feast (``materialize``, ``push``, ``get_online_features``), so both stores hold and answer the same values.

Feast semantics this relies on (read in feast 0.67's ``infra/offline_stores/ibis.py``,
``infra/compute_engines/local/`` and ``infra/online_stores/sqlite.py``):

- Offline join: for an entity row at ``t`` a feature row at ``ts`` qualifies iff ``ts <= t`` and, when the view
  has a TTL, ``ts + ttl >= t`` -- both bounds inclusive. ``ttl=timedelta(0)`` (falsy) means no expiry. Among
  qualifying rows the one with the greatest ``ts`` wins, ties broken by the greatest created timestamp; rows tied
  on both are picked arbitrarily.
- Materialization of ``[start, end]`` reads rows with ``start <= ts <= end`` (both inclusive), keeps the latest
  per entity key and upserts it. SQLite overwrites without comparing event timestamps (last write wins), so
  windows run oldest first and materializing an older range after a newer one would roll values back: refused
  unless ``allow_rewind=True``. Redis (``infra/online_stores/redis.py``) keeps, per entity key and view, the
  value with the newest event timestamp and skips a write whose timestamp is not newer (an equal one included):
  forward windows and pushes of newly scored rows write the same values as SQLite; a rewind leaves Redis as it
  was. Online reads apply no TTL; :meth:`online_features` can (``as_of=``).

Prediction views (one per model spec, built by :mod:`batch_platform.lib.feast_declarations`, tagged ``batch_platform/kind: predictions``) are fed by
:meth:`FeatureStoreClient.push` only: materialization skips them and the definitions fingerprint leaves them out
(a model's features do not change when a spec's served predictions do).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch_platform import settings
from batch_platform.lib import faults, wide_store
from batch_platform.lib.feast_declarations import KIND_TAG, PREDICTIONS_KIND
from batch_platform.lib.feast_import import import_feast
from batch_platform.lib.files import file_lock

if TYPE_CHECKING:  # feast takes seconds to import: only when a client is used
    import feast
    from feast.repo_contents import RepoContents

ENV_VARS = (settings.FEATURES_VAR, settings.FEAST_REGISTRY_VAR, settings.ONLINE_STORE_VAR)
FEAST_TIMESTAMP = "event_timestamp"  # the entity timestamp column name we hand to Feast
_ROW = "__batch_platform_entity_row"  # distinct (keys, timestamp) id we add and drop
_TS_SUFFIX = "__ts"  # feast.online_response.TIMESTAMP_POSTFIX
_IMPORT_LOCK = threading.Lock()
_NUMERIC_TYPES = {"INT32", "INT64", "FLOAT", "DOUBLE", "BOOL"}
LOCK_TIMEOUT_S = 30 * 60


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------
class FeatureStoreError(RuntimeError):
    """Base class of the named errors below."""


class FeatureStoreNotApplied(FeatureStoreError):
    """No registry (or an empty one): run :meth:`FeatureStoreClient.apply` / ``feast apply`` first."""


class UnknownFeatureObject(FeatureStoreError, LookupError):
    """A feature service or view name that the registry does not hold."""


class MissingFeatureTable(FeatureStoreError, FileNotFoundError):
    """A view's parquet source file does not exist (dbt has not written the table yet?)."""

    def __init__(self, view: str, path: str):
        self.view, self.path = view, path
        super().__init__(f"feature table of view {view!r} not found: {path} (run the dbt feature models first)")


class FeatureTableSchemaError(FeatureStoreError):
    """A parquet source lacks a column the view declares, or stores timestamps Feast's DuckDB store cannot read."""


class EntityFrameError(FeatureStoreError, ValueError):
    """The entity frame lacks a join key / the timestamp column, has null timestamps or clashes with a feature."""


class RepoDefinitionError(FeatureStoreError):
    """``feature_repo/`` holds something this platform does not support (only entities, file and push sources,
    feature views and feature services)."""


class FeatureStoreBusy(FeatureStoreError, TimeoutError):
    """Another process held the registry lock longer than ``LOCK_TIMEOUT_S``."""


class MaterializationWouldRewind(FeatureStoreError):
    """Materializing a range ending before what the online store already holds would roll values back."""


class OnlineStoreUnreachable(FeatureStoreError, ConnectionError):
    """The Redis server named by ``BATCH_PLATFORM_REDIS`` does not answer."""


# ----------------------------------------------------------------------------------------------------------------
# Summaries (plain dataclasses: Dagster metadata serializes them with dataclasses.asdict)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplySummary:
    entities: int
    feature_views: int
    feature_services: int
    entity_names: list[str]
    feature_view_names: list[str]
    feature_service_names: list[str]
    registry_path: str
    online_store_path: str  # the SQLite file; empty when the online store is Redis
    fingerprint: str
    seconds: float
    prediction_view_names: list[str] = field(default_factory=list)  # push-fed views of served predictions
    diff: str = ""  # Feast's registry/infra diff text ("Created feature view ..."), empty when nothing changed
    online_store: str = ""  # which online store: "sqlite <path>" or "redis <host:port,...>" (password masked)


@dataclass(frozen=True)
class BatchReport:
    """One ``store.materialize`` call: one view, one window ``[start, end]`` (both inclusive, as in Feast)."""

    view: str
    start: datetime
    end: datetime
    rows: int  # entity keys written (distinct keys with a row in the window; Feast writes the latest per key)
    seconds: float


@dataclass(frozen=True)
class MaterializeSummary:
    end: datetime
    batch_days: int
    starts: dict[str, datetime]  # per view: where this run started (equal for materialize, per view for incremental)
    batches: list[BatchReport]
    skipped_windows: int  # windows without any source row: no Feast call needed
    seconds: float
    rows_by_view: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_view.values())


# ----------------------------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------------------------
class FeatureStoreClient:
    """The platform's handle on the Feast repo. Constructing it is cheap; Feast is opened on first use."""

    def __init__(self, repo_dir: Path = settings.FEATURE_REPO_DIR) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        self._store: feast.FeatureStore | None = None
        self._wide: tuple[Path, Any] | None = None  # (online store path, its writing connection)

    def __repr__(self) -> str:
        return f"FeatureStoreClient({str(self.repo_dir)!r})"

    # -- plumbing -------------------------------------------------------------------------------------------------
    @property
    def store(self) -> feast.FeatureStore:
        """The wrapped :class:`feast.FeatureStore`, built on first access from the environment at that moment
        (Redis when ``BATCH_PLATFORM_REDIS`` is set then, after checking that the server answers)."""
        if self._store is None:
            _ensure_env()
            import_feast()
            from feast import FeatureStore

            config = repo_config(self.repo_dir)
            redis = getattr(config.online_store, "connection_string", None)
            if redis is not None:
                ping_redis(redis)
            store = FeatureStore(repo_path=str(self.repo_dir), config=config)
            self._resolve(store.config.registry.path).parent.mkdir(parents=True, exist_ok=True)
            if redis is None:
                self._resolve(store.config.online_store.path).parent.mkdir(parents=True, exist_ok=True)
            self._store = store
        return self._store

    @property
    def registry_path(self) -> Path:
        return self._resolve(self.store.config.registry.path)

    @property
    def uses_redis(self) -> bool:
        return self.store.config.online_store.type == "redis"

    @property
    def uses_wide_store(self) -> bool:
        """The online store is the platform's wide-row SQLite store (``feature_store.yaml``'s default), which the
        platform writes in bulk itself; otherwise (Redis, or Feast's stock SQLite store) writes go through Feast."""
        return self.store.config.online_store.type == wide_store.FEAST_TYPE

    @property
    def online_store_path(self) -> Path | None:
        """The SQLite online store file; None when the online store is Redis."""
        if self.uses_redis:
            return None
        return self._resolve(self.store.config.online_store.path)

    @property
    def online_store(self) -> str:
        """Which online store, for logs and metadata: ``sqlite <path>`` or ``redis <connection>`` (password
        masked)."""
        if self.uses_redis:
            return f"redis {_masked(self.store.config.online_store.connection_string)}"
        return f"sqlite {self.online_store_path}"

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.repo_dir / p

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool):
        """Readers (shared) and writers (exclusive) of the registry and online store, across processes.

        Feast's file registry is rewritten in place (truncate + write, not an atomic rename) on every apply and
        after every materialize call, so a reader in another process (a training-set step running beside the
        online-store step) could read a truncated registry; SQLite readers could also time out behind a long
        write transaction. Every public method holds this lock (``<registry>.lock``); materialization takes it
        exclusively one window at a time, so readers wait at most one window. Never nested.
        """
        lock_path = self.registry_path.with_name(self.registry_path.name + ".lock")
        with file_lock(lock_path, exclusive=exclusive, timeout_s=LOCK_TIMEOUT_S,
                       timeout_error=lambda: FeatureStoreBusy(
                           f"{lock_path} held by another process for {LOCK_TIMEOUT_S} s")):
            yield

    def _require_applied(self) -> None:
        if not self.registry_path.exists():
            raise FeatureStoreNotApplied(
                f"no Feast registry at {self.registry_path}: run FeatureStoreClient.apply() (or `feast apply` "
                f"in {self.repo_dir})"
            )
        store = self.store
        store.refresh_registry()
        if not store.list_feature_views():
            raise FeatureStoreNotApplied(f"the Feast registry {self.registry_path} holds no feature views")

    def _feature_view(self, name: str) -> feast.FeatureView:
        import_feast()
        from feast.errors import FeatureViewNotFoundException

        try:
            return self.store.get_feature_view(name)
        except FeatureViewNotFoundException:
            known = sorted(v.name for v in self.store.list_feature_views())
            raise UnknownFeatureObject(f"unknown feature view {name!r}; the registry has {known}") from None

    def _feature_service(self, name: str) -> feast.FeatureService:
        import_feast()
        from feast.errors import FeatureServiceNotFoundException

        try:
            return self.store.get_feature_service(name)
        except FeatureServiceNotFoundException:
            known = sorted(s.name for s in self.store.list_feature_services())
            raise UnknownFeatureObject(f"unknown feature service {name!r}; the registry has {known}") from None

    # -- apply ----------------------------------------------------------------------------------------------------
    def apply(self) -> ApplySummary:
        """``feast apply`` of the repo: register its objects, delete registry objects it no longer defines, create
        the online tables. Idempotent (a second call changes nothing)."""
        import_feast()
        from feast.feature_view import DUMMY_ENTITY_NAME
        from feast.repo_operations import apply_total_with_repo_instance

        t0 = time.perf_counter()
        store = self.store
        repo = load_repo_contents(self.repo_dir, store.project)
        out = io.StringIO()
        with self._locked(exclusive=True):
            foreign = self._forget_other_online_stores()
            planned = store._should_use_plan()  # Feast prints its registry diff itself only for its SQLite store
            if not planned:  # the same diff, computed as Feast's plan does (validation and inference first)
                store.refresh_registry()
                text = store.plan(repo)[0].to_string()
                out.write(re.sub(r"\x1b\[[0-9;]*m", "", text) + "\n")  # as click.echo writes it off a terminal
            with contextlib.redirect_stdout(out):
                apply_total_with_repo_instance(
                    store, store.project, store.registry, repo, skip_source_validation=False
                )
            store.refresh_registry()
            entities = sorted(e.name for e in store.list_entities() if e.name != DUMMY_ENTITY_NAME)
            all_views = store.list_feature_views()
            views = sorted(v.name for v in all_views if not is_prediction_view(v))
            prediction_views = sorted(v.name for v in all_views if is_prediction_view(v))
            services = sorted(s.name for s in store.list_feature_services())
        diff = "\n".join(
            [f"forgot {len(names)} online table(s) of another instance's online store {path} (the registry was "
             "copied with its data folder; that store is left untouched)" for path, names in foreign.items()]
            + [line for line in out.getvalue().splitlines() if line.strip() and "No changes" not in line
               and not line.startswith(("Deploying infrastructure for", "Removing infrastructure for"))]
        )
        return ApplySummary(
            entities=len(entities),
            feature_views=len(views),
            feature_services=len(services),
            entity_names=entities,
            feature_view_names=views,
            feature_service_names=services,
            registry_path=str(self.registry_path),
            online_store_path=str(self.online_store_path or ""),
            fingerprint=_fingerprint(
                [e for e in repo.entities if e.name != DUMMY_ENTITY_NAME], repo.feature_views, repo.feature_services
            ),
            seconds=round(time.perf_counter() - t0, 3),
            prediction_view_names=prediction_views,
            diff=diff,
            online_store=self.online_store,
        )

    def _forget_other_online_stores(self) -> dict[str, list[str]]:
        """Drop from the registry's infrastructure the SQLite online tables kept in another file than this
        instance's online store, without touching them: Feast records each table's absolute path, so a registry
        copied with its data folder still lists the original's tables, and ``feast apply`` would tear those down
        (drop them in the original's file) when it creates this instance's. Works on the registry's protobuf, so
        the other file is never opened (it may be gone). With Redis as the online store every SQLite table is
        another store's. Returns {other path: table names}."""
        registry = self.store.registry
        proto = registry._get_registry_proto(project=self.store.project, allow_cache=False)
        own = str(self.online_store_path.resolve()) if self.online_store_path is not None else None
        foreign: dict[str, list[str]] = {}
        keep = []
        for obj in proto.infra.infra_objects:
            if obj.HasField("sqlite_table") and str(Path(obj.sqlite_table.path).resolve()) != own:
                foreign.setdefault(obj.sqlite_table.path, []).append(obj.sqlite_table.name)
            else:
                keep.append(obj)
        if foreign:
            registry._prepare_registry_for_changes(self.store.project)
            infra = registry.cached_registry_proto.infra
            del infra.infra_objects[:]
            infra.infra_objects.extend(keep)
            registry.commit()
        return foreign

    def definitions_fingerprint(self) -> str:
        """sha256 of the repo's feature definitions (entities; views with entities, features and types, TTL, online
        flag and the path-independent parts of their source; services with their projections). Independent of
        machine, checkout location and data paths; changes when any of those definitions change."""
        import_feast()
        from feast.feature_view import DUMMY_ENTITY_NAME

        _ensure_env()
        repo = load_repo_contents(self.repo_dir, project=None)
        return _fingerprint(
            [e for e in repo.entities if e.name != DUMMY_ENTITY_NAME], repo.feature_views, repo.feature_services
        )

    def applied_fingerprint(self) -> str:
        """The same fingerprint computed from the registry: differs from :meth:`definitions_fingerprint` when the
        repo changed since the last apply."""
        with self._locked(exclusive=False):
            self._require_applied()
            store = self.store
            return _fingerprint(store.list_entities(), store.list_feature_views(), store.list_feature_services())

    # -- offline --------------------------------------------------------------------------------------------------
    def historical_features(
        self,
        entity_df: pd.DataFrame,
        feature_service: str,
        *,
        timestamp_column: str = FEAST_TIMESTAMP,
        engine: str = "duckdb",
    ) -> pd.DataFrame:
        """Point-in-time join of ``feature_service`` onto ``entity_df`` (one output row per input row, same order,
        same index, same columns, plus one column per feature). Naive timestamps are taken as UTC.

        Feature dtypes do not depend on the data: numeric (and bool) features are float64 with NaN for missing,
        UnixTimestamp features datetime64[us, UTC], strings object. A feature is missing when the key has no row
        at or before the timestamp, or (views with a TTL) only rows older than ``timestamp - ttl``.

        ``engine="duckdb"`` (default) runs Feast's join rules as one DuckDB ``ASOF LEFT JOIN`` over the views'
        files (:mod:`batch_platform.lib.pit_join`; the views are resolved from the Feast registry);
        ``engine="feast"`` calls Feast's ``get_historical_features`` itself (each distinct (keys, timestamp) once),
        the definition the DuckDB join is tested against. Both return the same frame."""
        if engine not in ("duckdb", "feast"):
            raise ValueError(f"engine must be 'duckdb' or 'feast', not {engine!r}")
        with self._locked(exclusive=False):
            return self._historical_features(entity_df, feature_service, timestamp_column, engine)

    def historical_features_file(
        self, entity_path: Path, feature_service: str, timestamp: datetime, out_path: Path
    ) -> int:
        """The DuckDB join of :meth:`historical_features` from file to file: every row of the parquet file
        ``entity_path`` (which holds the service's entity columns) with the features as of ``timestamp``, written
        to ``out_path`` in the file's row order (its columns, then the features; types as in
        :mod:`batch_platform.lib.pit_join`). One query for the whole file, in bounded memory. Returns the rows
        written; :meth:`conform_features` gives a chunk read back the dtypes of :meth:`historical_features`."""
        import pyarrow.parquet as pq

        from batch_platform.lib import pit_join

        with self._locked(exclusive=False):
            joins, keys, _ = self._view_joins(feature_service)
        names = pq.read_schema(entity_path).names
        missing = [k for k in keys if k not in names]
        if missing:
            raise EntityFrameError(f"{entity_path} lacks {missing} needed by feature service {feature_service!r}")
        return pit_join.join_file(joins, str(entity_path), _utc(timestamp), str(out_path))

    def conform_features(self, frame: pd.DataFrame, feature_service: str) -> pd.DataFrame:
        """``frame``'s feature columns in the dtypes :meth:`historical_features` guarantees (in place; returned)."""
        with self._locked(exclusive=False):
            self._require_applied()
            service = self._feature_service(feature_service)
        _conform(frame, service.feature_view_projections)
        return frame

    def _view_joins(self, feature_service: str) -> tuple[list, list[str], list[str]]:
        """The service's views as :class:`batch_platform.lib.pit_join.ViewJoin` plans (read from the registry,
        files checked), the entity columns they join on and the feature names, in service order."""
        from batch_platform.lib.pit_join import ViewJoin

        self._require_applied()
        service = self._feature_service(feature_service)
        joins, keys, features = [], [], []
        for p in service.feature_view_projections:
            view = self._feature_view(p.name)
            _check_feature_table(view)
            source = view.batch_source
            reverse = {v: k for k, v in (source.field_mapping or {}).items()}
            pairs = tuple((reverse.get(k, k), (p.join_key_map or {}).get(k, k)) for k in view.join_keys)
            keys += [ent for _, ent in pairs if ent not in keys]
            features += [f.name for f in p.features]
            joins.append(ViewJoin(
                name=view.name, path=source.path, timestamp_column=reverse.get(source.timestamp_field,
                                                                                source.timestamp_field),
                created_column=(reverse.get(source.created_timestamp_column, source.created_timestamp_column)
                                if source.created_timestamp_column else None),
                keys=pairs,
                features=tuple((reverse.get(f.name, f.name), f.name, f.dtype.to_value_type().name)
                               for f in p.features),
                ttl=view.ttl or None,
            ))
        return joins, keys, features

    def _historical_features(
        self, entity_df: pd.DataFrame, feature_service: str, timestamp_column: str, engine: str
    ) -> pd.DataFrame:
        joins, keys, features = self._view_joins(feature_service)
        missing = [c for c in [*keys, timestamp_column] if c not in entity_df.columns]
        if missing:
            raise EntityFrameError(
                f"entity frame lacks {missing} needed by feature service {feature_service!r} "
                f"(columns: {list(entity_df.columns)})"
            )
        clash = sorted(set(features) & set(entity_df.columns))
        if clash:
            raise EntityFrameError(f"entity frame already has columns named like features: {clash}")

        ts = _to_utc_us(entity_df[timestamp_column])
        if ts.isna().any():
            raise EntityFrameError(f"{int(ts.isna().sum())} entity row(s) have no {timestamp_column!r}")
        if engine == "feast":
            joined = self._feast_join(entity_df[keys], ts, feature_service, features)
        else:
            joined = self._duckdb_join(entity_df[keys], ts, joins, features)
        _conform(joined, self._feature_service(feature_service).feature_view_projections)
        out = pd.concat([entity_df.reset_index(drop=True), joined], axis=1)
        out.index = entity_df.index
        return out

    def _duckdb_join(self, keys: pd.DataFrame, ts: pd.Series, joins: list, features: list[str]) -> pd.DataFrame:
        import pyarrow as pa

        from batch_platform.lib import pit_join

        if not len(keys):
            return pd.DataFrame({f: pd.Series(dtype=object) for f in features})
        entities = pa.Table.from_pandas(keys.reset_index(drop=True), preserve_index=False)
        entities = entities.append_column(pit_join.ROW, pa.array(np.arange(len(keys), dtype=np.int64)))
        entities = entities.append_column(pit_join.TS, pa.array(ts.reset_index(drop=True)))
        table = pit_join.join_table(joins, entities)
        if table.num_rows != len(keys):
            raise FeatureStoreError(f"the join returned {table.num_rows} rows for {len(keys)} entity rows")
        return table.to_pandas()

    def _feast_join(self, keys: pd.DataFrame, ts: pd.Series, feature_service: str, features: list[str]) -> pd.DataFrame:
        service = self._feature_service(feature_service)
        frame = keys.reset_index(drop=True)
        frame[FEAST_TIMESTAMP] = ts.reset_index(drop=True)
        # Send each distinct (keys, timestamp) once; map the answers back to every row.
        combo = frame.groupby([*keys.columns, FEAST_TIMESTAMP], dropna=False, sort=False).ngroup().to_numpy()
        first = ~pd.Series(combo).duplicated().to_numpy()
        query = frame.loc[first].reset_index(drop=True)
        query[_ROW] = combo[first]

        if len(query):
            joined = self.store.get_historical_features(entity_df=query, features=service).to_df()
        else:
            joined = pd.DataFrame({_ROW: pd.Series(dtype="int64"), **{f: pd.Series(dtype=object) for f in features}})
        if len(joined) != len(query) or joined[_ROW].duplicated().any():
            raise FeatureStoreError(
                f"Feast returned {len(joined)} rows for {len(query)} distinct entity rows (fan-out or loss)"
            )
        return joined.set_index(_ROW).reindex(combo)[features].reset_index(drop=True)

    # -- online ---------------------------------------------------------------------------------------------------
    def online_features(
        self,
        feature_refs_or_service: str | list[str],
        entity_rows: list[dict[str, Any]],
        *,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Latest materialized values, one dict per entity row (join keys + features by name).

        Feast's online read ignores TTLs. With ``as_of`` a value is kept only if its feature timestamp ``ts``
        satisfies ``ts <= as_of <= ts + ttl`` (the offline join's rule; timestamps at second precision, as the
        online store returns them), so the result equals ``historical_features`` at ``as_of``.
        """
        with self._locked(exclusive=False):
            return self._online_features(feature_refs_or_service, entity_rows, as_of)

    def service_views(self, feature_service: str) -> dict[str, list[str]]:
        """Feature names per view of a feature service (as the service projects them), in service order."""
        with self._locked(exclusive=False):
            self._require_applied()
            service = self._feature_service(feature_service)
            return {p.name: [f.name for f in p.features] for p in service.feature_view_projections}

    def view_ttl(self, view: str) -> timedelta | None:
        """A view's TTL (None: no expiry)."""
        with self._locked(exclusive=False):
            self._require_applied()
            return self._feature_view(view).ttl or None

    def push(self, push_source: str, df: pd.DataFrame) -> int:
        """Write ``df`` (join keys, the source's timestamp field, features) to the online store through a
        PushSource; returns the rows pushed. SQLite: last write wins per key; Redis: the newest event timestamp
        wins (a row not newer than the stored one is skipped)."""
        import_feast()
        from feast.data_source import PushMode
        from feast.errors import DataSourceObjectNotFoundException, PushSourceNotFoundException

        if df.empty:
            return 0
        with self._locked(exclusive=True):
            self._require_applied()
            try:
                self.store.push(push_source, df, to=PushMode.ONLINE)
            except (PushSourceNotFoundException, DataSourceObjectNotFoundException):
                raise UnknownFeatureObject(f"unknown push source {push_source!r} (apply the feature repo)") from None
        return len(df)

    def write_online(self, view: str, frames: Iterable[pd.DataFrame], *, timestamp_column: str = FEAST_TIMESTAMP
                     ) -> int:
        """Write rows of ``view`` (its join keys, ``timestamp_column`` as the event timestamp, its features by name)
        to the online store; returns the rows written. On the wide SQLite store every frame goes into one
        transaction, so readers see the previous rows or all of the new ones; elsewhere (Redis) each frame is
        written through Feast (``write_to_online_store``; Redis keeps the newer event timestamp per key)."""
        written = 0
        with self._locked(exclusive=True):
            if self.uses_wide_store:
                return self._write_wide(view, frames, timestamp_column)
            self._require_applied()
            fv = self._feature_view(view)
            for frame in frames:
                if len(frame):
                    self.store.write_to_online_store(view, frame.rename(
                        columns={timestamp_column: fv.batch_source.timestamp_field}))
                    written += len(frame)
        return written

    def _write_wide(self, view: str, frames: Iterable[pd.DataFrame], timestamp_column: str) -> int:
        """:meth:`write_online` on the wide store: the view's layout is the one ``apply`` recorded in the store's
        catalog (no registry read); one transaction for every frame."""
        import pyarrow as pa

        written = 0
        con = self._wide_connection()
        try:
            layout = wide_store.layout_of(con, self.store.project, view)
        except wide_store.UnknownOnlineView as exc:
            raise UnknownFeatureObject(str(exc)) from None
        with wide_store.transaction(con):
            for frame in frames:
                if not len(frame):
                    continue
                table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
                rows = wide_store.arrow_rows(layout, table, timestamp_column=timestamp_column)
                wide_store.write_rows(con, layout, rows)
                written += len(rows)
        return written

    def _wide_connection(self):
        """The client's writing connection to the wide store, opened once (closing the last connection of a WAL
        database checkpoints it: a cost per write when reopened each time)."""
        path = self.online_store_path
        if self._wide is None or self._wide[0] != path:
            self._wide = (path, wide_store.connect(path))
        return self._wide[1]

    def _online_features(
        self, feature_refs_or_service: str | list[str], entity_rows: list[dict[str, Any]], as_of: datetime | None
    ) -> list[dict[str, Any]]:
        self._require_applied()
        target: Any
        ttl_by_feature: dict[str, timedelta | None] = {}
        if isinstance(feature_refs_or_service, str) and ":" not in feature_refs_or_service:
            target = self._feature_service(feature_refs_or_service)
            for p in target.feature_view_projections:
                ttl = self._feature_view(p.name).ttl
                ttl_by_feature.update({f.name: ttl for f in p.features})
        else:
            target = [feature_refs_or_service] if isinstance(feature_refs_or_service, str) else list(
                feature_refs_or_service
            )
            for ref in target:
                view, feature = ref.split(":", 1)
                ttl_by_feature[feature] = self._feature_view(view).ttl
        if not entity_rows:
            return []
        response = self.store.get_online_features(features=target, entity_rows=entity_rows)
        data = response.to_dict(include_event_timestamps=as_of is not None)
        rows = [
            {k: v[i] for k, v in data.items() if not k.endswith(_TS_SUFFIX)} for i in range(len(entity_rows))
        ]
        if as_of is not None:
            cutoff = int(_utc(as_of).timestamp())
            for name, ttl in ttl_by_feature.items():
                stamps = data.get(name + _TS_SUFFIX)
                if stamps is None:
                    continue
                horizon = int(ttl.total_seconds()) if ttl else None
                for row, ts in zip(rows, stamps):
                    if row.get(name) is not None and (ts > cutoff or (horizon is not None and ts + horizon < cutoff)):
                        row[name] = None
        return rows

    # -- materialization ------------------------------------------------------------------------------------------
    def materialize(
        self,
        start: datetime,
        end: datetime,
        *,
        batch_days: int = 7,
        views: list[str] | None = None,
        allow_rewind: bool = False,
    ) -> MaterializeSummary:
        """Load ``[start, end]`` into the online store, oldest window first, ``batch_days`` per Feast call."""
        start, end = _utc(start), _utc(end)
        if start >= end:
            raise ValueError(f"start {start} is not before end {end}")
        with self._locked(exclusive=False):
            self._require_applied()
            names = self._online_view_names(views)
        return self._walk({name: start for name in names}, end, batch_days, allow_rewind)

    def materialize_incremental(
        self, end: datetime, *, batch_days: int = 7, views: list[str] | None = None
    ) -> MaterializeSummary:
        """Materialize each view from where its last materialization ended (the registry's intervals) up to
        ``end``. A view never materialized starts at ``end - ttl`` (Feast's rule, but anchored at ``end`` instead
        of the wall clock, which means nothing for historical data), or at its oldest row if that is later or the
        view has no TTL."""
        end = _utc(end)
        starts: dict[str, datetime] = {}
        with self._locked(exclusive=False):
            self._require_applied()
            for name in self._online_view_names(views):
                view = self._feature_view(name)
                _check_feature_table(view)
                last = view.most_recent_end_time
                if last is not None:
                    starts[name] = _utc(last)
                else:
                    oldest = _oldest_timestamp(view)
                    start = oldest if oldest is not None else end
                    if view.ttl:  # older rows are expired at `end`: serving them would only serve stale values
                        start = max(start, end - view.ttl)
                    starts[name] = start
        return self._walk(starts, end, batch_days, allow_rewind=False)

    def _online_view_names(self, views: list[str] | None) -> list[str]:
        if views is None:  # prediction views are fed by push, never materialized from their export
            return sorted(v.name for v in self.store.list_feature_views() if v.online and not is_prediction_view(v))
        return [self._feature_view(v).name for v in views]

    def _walk(
        self, starts: dict[str, datetime], end: datetime, batch_days: int, allow_rewind: bool
    ) -> MaterializeSummary:
        if batch_days < 1:
            raise ValueError(f"batch_days must be >= 1, got {batch_days}")
        t0 = time.perf_counter()
        store = self.store
        step = timedelta(days=batch_days)
        batches: list[BatchReport] = []
        rows_by_view: dict[str, int] = {}
        skipped = 0
        views = {}
        duck = None  # the wide store's bulk path: one DuckDB connection for every window
        with self._locked(exclusive=False):  # check every view before writing anything
            for name in starts:
                views[name] = view = self._feature_view(name)
                _check_feature_table(view)
                last = view.most_recent_end_time
                if last is not None and end < _utc(last) and not allow_rewind:
                    raise MaterializationWouldRewind(
                        f"{name} is materialized up to {_utc(last).isoformat()}; materializing up to "
                        f"{end.isoformat()} would overwrite newer online values with older ones "
                        "(allow_rewind=True to do it anyway)"
                    )
        for name, start in starts.items():
            view = views[name]
            rows_by_view[name] = 0
            if start >= end:
                continue
            windows = []
            ws = start
            while ws < end:
                windows.append((ws, min(ws + step, end)))
                ws = windows[-1][1]
            wide = self.uses_wide_store  # written in bulk: no count first, the write says how many keys
            counts = [None] * len(windows) if wide else _window_key_counts(view, windows)
            if wide and duck is None:
                import duckdb

                duck = duckdb.connect()
                duck.execute("SET TimeZone = 'UTC'")
            for (ws, we), rows in zip(windows, counts):
                if rows == 0:  # Feast would read nothing and write nothing
                    skipped += 1
                    continue
                tb = time.perf_counter()
                with self._locked(exclusive=True), contextlib.redirect_stdout(io.StringIO()):
                    if wide:
                        rows = _materialize_wide(self._wide_connection(), store.project, view, ws, we, duck)
                    else:
                        store.materialize(ws, we, feature_views=[name])
                if rows == 0:
                    skipped += 1
                    continue
                batches.append(BatchReport(name, ws, we, rows, round(time.perf_counter() - tb, 3)))
                rows_by_view[name] += rows
                faults.point("feast.window_written")
            # Record the whole range, so the next incremental run starts at `end` even if the last windows were
            # empty (Feast records only the windows it was called for).
            with self._locked(exclusive=True):
                store.registry.apply_materialization(
                    self._feature_view(name), store.project, start, end, commit=True
                )
        if duck is not None:
            duck.close()
        return MaterializeSummary(
            end=end,
            batch_days=batch_days,
            starts=dict(starts),
            batches=batches,
            skipped_windows=skipped,
            seconds=round(time.perf_counter() - t0, 3),
            rows_by_view=rows_by_view,
        )


# ----------------------------------------------------------------------------------------------------------------
# The store's configuration: feature_store.yaml, with Redis as the online store when configured
# ----------------------------------------------------------------------------------------------------------------
REDIS_PING_TIMEOUT_S = 5.0


def repo_config(repo_dir: Path) -> feast.RepoConfig:
    """``feature_store.yaml`` of ``repo_dir`` read as Feast reads it (``${VAR}`` expanded, then parsed); when
    ``BATCH_PLATFORM_REDIS`` is set, its ``online_store`` block is replaced by Feast's Redis online store at that
    connection string (everything else unchanged)."""
    import yaml

    import_feast()
    from feast.repo_config import RepoConfig

    repo_dir = Path(repo_dir).resolve()
    raw = yaml.safe_load(os.path.expandvars((repo_dir / "feature_store.yaml").read_text()))
    redis = settings.redis_connection()
    if redis is not None:
        raw["online_store"] = {"type": "redis", "redis_type": "redis", "connection_string": redis}
    config = RepoConfig(**raw)
    config.repo_path = repo_dir
    return config


def _redis_kwargs(connection_string: str) -> dict[str, Any]:
    """redis-py arguments of a Feast connection string, parsed by Feast's own parser (the client Feast opens)."""
    import_feast()
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    if not nodes or "port" not in nodes[0]:
        raise FeatureStoreError(
            f"{settings.REDIS_VAR}={_masked(connection_string)!r} is not host:port[,db=N,password=...]"
        )
    return {"host": nodes[0]["host"], "port": int(nodes[0]["port"]), **params}


def ping_redis(connection_string: str) -> None:
    """Raise :class:`OnlineStoreUnreachable` (naming the address) unless the Redis server answers PING."""
    import redis

    kwargs = _redis_kwargs(connection_string)
    client = redis.Redis(**{"socket_connect_timeout": REDIS_PING_TIMEOUT_S, "socket_timeout": REDIS_PING_TIMEOUT_S,
                            **kwargs})
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise OnlineStoreUnreachable(
            f"Redis online store at {kwargs['host']}:{kwargs['port']} (db {kwargs.get('db', 0)}, from "
            f"{settings.REDIS_VAR}) is unreachable: {exc}"
        ) from exc
    finally:
        client.close()


def _masked(connection_string: str) -> str:
    return ",".join("password=***" if part.startswith("password=") else part
                    for part in connection_string.split(","))


# ----------------------------------------------------------------------------------------------------------------
# Loading the repo like `feast apply` does
# ----------------------------------------------------------------------------------------------------------------
def load_repo_contents(repo_dir: Path, project: str | None) -> RepoContents:
    """Import the repo's Feast modules (those ``.feastignore`` keeps, as ``feast apply`` selects them) and collect
    their objects. Modules are imported fresh (the FileSource paths come from the environment at import) and
    removed from ``sys.modules`` afterwards, so nothing leaks into the importing process."""
    import_feast()
    from feast import Entity, FeatureService, FeatureView, Project
    from feast.batch_feature_view import BatchFeatureView
    from feast.data_source import DataSource, PushSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.on_demand_feature_view import OnDemandFeatureView
    from feast.permissions.permission import Permission
    from feast.repo_contents import RepoContents
    from feast.repo_operations import get_repo_files
    from feast.stream_feature_view import StreamFeatureView

    repo_dir = Path(repo_dir).resolve()
    files = get_repo_files(repo_dir)
    names = [".".join(f.relative_to(repo_dir).with_suffix("").parts) for f in files]
    res = RepoContents(
        projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
        on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[],
    )

    def add(bucket: list, obj: Any) -> None:
        if not any(obj is seen for seen in bucket):
            bucket.append(obj)

    unsupported = (OnDemandFeatureView, StreamFeatureView, BatchFeatureView, Permission)
    from batch_platform.lib.feast_declarations import declared_objects, prediction_objects

    named: dict[tuple[type, str], Any] = {}

    def once(obj: Any) -> bool:
        """Whether ``obj`` is new; the same object declared twice (features.yaml and a module building from it)
        counts once, two different definitions under one name are an error."""
        family = next((t for t in (DataSource, FeatureView, Entity, FeatureService, Project) if isinstance(obj, t)),
                      type(obj))
        seen = named.get((family, obj.name))
        if seen is None:
            named[(family, obj.name)] = obj
            return True
        if seen is obj or seen == obj:
            return False
        raise RepoDefinitionError(f"{family.__name__} {obj.name!r} is defined twice, differently")

    generated = {**declared_objects(repo_dir), **prediction_objects()}
    with _isolated_imports(repo_dir, names):
        objects = [(f"{name}.{attr}", getattr(module, attr)) for name in names
                   for module in (importlib.import_module(name),) for attr in dir(module)]
        for attr, obj in [*objects, *((f"features.yaml:{k}", v) for k, v in generated.items())]:
            if isinstance(obj, DataSource | FeatureView | Entity | FeatureService | Project) and not once(obj):
                continue
            if isinstance(obj, unsupported):
                raise RepoDefinitionError(
                    f"{attr} is a {type(obj).__name__}; feature_repo/ keeps to Entity, FileSource, "
                    "PushSource, FeatureView, FeatureService"
                )
            if isinstance(obj, DataSource):
                add(res.data_sources, obj)
                if isinstance(obj, PushSource) and obj.batch_source is not None:
                    add(res.data_sources, obj.batch_source)
            elif isinstance(obj, FeatureView):
                add(res.feature_views, obj)
                for source in (obj.batch_source, obj.stream_source):
                    if source is not None:
                        add(res.data_sources, source)
            elif isinstance(obj, Entity):
                add(res.entities, obj)
            elif isinstance(obj, FeatureService):
                add(res.feature_services, obj)
            elif isinstance(obj, Project):
                add(res.projects, obj)
    if project is not None:
        if any(p.name != project for p in res.projects):
            raise RepoDefinitionError(f"Project objects {[p.name for p in res.projects]} != {project!r} of the yaml")
        if not res.projects:
            res.projects.append(Project(name=project))
    for view in res.feature_views:
        # Feast's ibis point-in-time join drops every joined column whose name ends in "_y" (its clash suffix),
        # so such a feature fails every historical retrieval with "Column ... is not found" (checked in 0.67).
        bad = [f.name for f in view.features if f.name.endswith("_y")]
        if bad:
            raise RepoDefinitionError(f"{view.name}: feature names ending in '_y' break Feast's offline join: {bad}")
    res.entities.append(DUMMY_ENTITY)  # as feast's parse_repo does, so apply's diff matches the CLI's
    return res


@contextlib.contextmanager
def _isolated_imports(repo_dir: Path, names: list[str]):
    """Make the repo's files importable by their bare names (siblings import each other so, as under the CLI)."""
    roots = {n.split(".")[0] for n in names}

    def ours(mod: str) -> bool:
        return mod.split(".")[0] in roots

    with _IMPORT_LOCK:
        saved = {m: sys.modules.pop(m) for m in list(sys.modules) if ours(m)}
        saved_path = list(sys.path)
        saved_bytecode = sys.dont_write_bytecode
        sys.path.insert(0, str(repo_dir))
        sys.dont_write_bytecode = True  # no __pycache__ in the repo
        importlib.invalidate_caches()
        try:
            yield
        finally:
            for m in [m for m in sys.modules if ours(m)]:
                del sys.modules[m]
            sys.modules.update(saved)
            sys.path[:] = saved_path
            sys.dont_write_bytecode = saved_bytecode


# ----------------------------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------------------------
def is_prediction_view(view) -> bool:
    return (getattr(view, "tags", None) or {}).get(KIND_TAG) == PREDICTIONS_KIND


def _fingerprint(entities, views, services) -> str:
    """Fingerprint of the *feature* definitions: prediction views and the entities only they use are left out."""
    views = [v for v in views if not is_prediction_view(v)]
    used = {e for v in views for e in v.entities}
    entities = [e for e in entities if e.name in used]
    return hashlib.sha256(
        json.dumps(canonical_definitions(entities, views, services), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def canonical_definitions(entities, views, services) -> dict[str, Any]:
    """The parts of the definitions that decide what features are served, as plain JSON-able data.

    Left out on purpose: descriptions, tags, owners, registry timestamps and the source's directory (a FileSource
    keeps only its file name), so the value is the same on every machine and for every data location.
    """
    import_feast()
    from feast.feature_view import DUMMY_ENTITY_NAME

    def field_list(fields) -> list[list[str]]:
        return [[f.name, f.dtype.to_value_type().name] for f in fields]

    def source(s) -> dict[str, Any] | None:
        if s is None:
            return None
        path = getattr(s, "path", None)
        fmt = getattr(s, "file_format", None)
        file = Path(path).name if path else None
        if file and type(fmt).__name__ == "ParquetFormat" and not file.endswith(".parquet"):
            # a parquet dataset folder <table>/ is the same table as the single file <table>.parquet it replaced
            # (fingerprints recorded before, e.g. by trained models, stay equal)
            file = f"{file}.parquet"
        return {
            "name": s.name,
            "kind": type(s).__name__,
            "file": file,
            "format": type(fmt).__name__ if fmt is not None else None,
            "timestamp_field": s.timestamp_field,
            "created_timestamp_column": s.created_timestamp_column or None,
            "field_mapping": sorted(s.field_mapping.items()),
        }

    return {
        "entities": sorted(
            (
                {"name": e.name, "join_key": e.join_key, "value_type": e.value_type.name}
                for e in entities
                if e.name != DUMMY_ENTITY_NAME
            ),
            key=lambda d: d["name"],
        ),
        "feature_views": sorted(
            (
                {
                    "name": v.name,
                    "entities": sorted(v.entities),
                    "features": field_list(v.features),
                    "ttl_seconds": v.ttl.total_seconds() if v.ttl else 0,
                    "online": bool(v.online),
                    "source": source(v.batch_source),
                }
                for v in views
            ),
            key=lambda d: d["name"],
        ),
        "feature_services": sorted(
            (
                {
                    "name": s.name,
                    "projections": [
                        {
                            "view": p.name,
                            "alias": p.name_alias or None,
                            "features": field_list(p.features),
                            "join_key_map": sorted((p.join_key_map or {}).items()),
                        }
                        for p in s.feature_view_projections
                    ],
                }
                for s in services
            ),
            key=lambda d: d["name"],
        ),
    }


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------
def _ensure_env() -> None:
    """feature_store.yaml and the declared sources read these; fill the unset ones with the platform defaults."""
    if not all(os.environ.get(v) for v in ENV_VARS):
        settings.export_defaults()


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _to_utc_us(values: pd.Series) -> pd.Series:
    """Any timestamp-like series -> datetime64[us, UTC] (naive values are taken as UTC)."""
    if str(values.dtype) == "datetime64[us, UTC]":
        return values
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")


def _conform(joined: pd.DataFrame, projections) -> None:
    """Stable dtypes whatever the nulls: numbers float64 (NaN = missing), timestamps datetime64[us, UTC]."""
    for p in projections:
        for f in p.features:
            kind = f.dtype.to_value_type().name
            if kind in _NUMERIC_TYPES:
                if joined[f.name].dtype != "float64":
                    joined[f.name] = pd.to_numeric(joined[f.name]).astype("float64")
            elif kind == "UNIX_TIMESTAMP":
                if str(joined[f.name].dtype) != "datetime64[us, UTC]":
                    joined[f.name] = _to_utc_us(joined[f.name])


def _check_feature_table(view) -> None:
    """Named errors for the two ways a dbt table breaks Feast: absent file, missing column / nanosecond stamps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = getattr(view.batch_source, "path", None)
    if path is None:
        return
    if not Path(path).exists():
        raise MissingFeatureTable(view.name, path)
    if Path(path).is_dir():  # a parquet dataset (hive partitions by day): the schema of its first file
        import pyarrow.dataset as ds

        schema = ds.dataset(path, format="parquet", partitioning="hive").schema
    else:
        schema = pq.read_schema(path)
    source = view.batch_source
    needed = [*view.join_keys, source.timestamp_field, *(f.name for f in view.features)]
    if source.created_timestamp_column:
        needed.append(source.created_timestamp_column)
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}
    missing = [c for c in needed if reverse.get(c, c) not in schema.names]
    if missing:
        raise FeatureTableSchemaError(
            f"{path} (view {view.name}) lacks column(s) {missing}; it has {schema.names}"
        )
    nanos = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]
    if nanos:
        raise FeatureTableSchemaError(
            f"{path} stores nanosecond timestamps in {nanos}; Feast's DuckDB store needs microseconds "
            "(DuckDB 2 cannot cast TIMESTAMPTZ_NS to TIMESTAMP, which materialization does): write them as "
            "timestamp('us', tz='UTC')"
        )


def _sql_path(path: str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _oldest_timestamp(view) -> datetime | None:
    import duckdb

    ts_col = view.batch_source.timestamp_field
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            f'SELECT min("{ts_col}") FROM read_parquet({_sql_path(view.batch_source.path)})'
        ).fetchone()
        value = row[0] if row else None
    finally:
        con.close()
    if value is None:
        return None
    return _utc(value) if isinstance(value, datetime) else _utc(pd.Timestamp(value).to_pydatetime())


def _window_key_counts(view, windows: list[tuple[datetime, datetime]]) -> list[int]:
    """Per window ``[ws, we]`` (inclusive, as Feast reads it): how many distinct entity keys have a row in it,
    which is what Feast writes (it keeps the latest row per key)."""
    import duckdb

    if not windows:
        return []
    ts_col = view.batch_source.timestamp_field
    keys = ", ".join(f'"{k}"' for k in view.join_keys) or "1"
    lo, hi = windows[0][0], windows[-1][1]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rel = con.execute(
            f'SELECT hash({keys}) AS k, epoch_us("{ts_col}") AS t FROM read_parquet({_sql_path(view.batch_source.path)}) '
            f'WHERE "{ts_col}" >= ?::TIMESTAMPTZ AND "{ts_col}" <= ?::TIMESTAMPTZ ORDER BY t',
            [lo.isoformat(), hi.isoformat()],
        ).fetchnumpy()
    finally:
        con.close()
    k, t = np.asarray(rel["k"]), np.asarray(rel["t"], dtype=np.int64)
    counts = []
    for ws, we in windows:
        a = np.searchsorted(t, _epoch_us(ws), side="left")
        b = np.searchsorted(t, _epoch_us(we), side="right")
        counts.append(int(len(np.unique(k[a:b]))) if b > a else 0)
    return counts


def _materialize_wide(online, project: str, view, start: datetime, end: datetime, duck=None) -> int:
    """Feast's materialization of one window into the wide SQLite store (``online``: a connection to it), in one
    transaction: the latest row per entity key among the view's rows timestamped in ``[start, end]`` (ties: the
    latest created timestamp), as Feast's offline store pulls them; returns the rows written. DuckDB selects the
    rows already in their stored form (``wide_store.duckdb_*_expr``), so they go from ``fetchall`` straight to
    ``executemany``. ``duck``: a DuckDB connection to reuse (UTC session)."""
    import duckdb

    from batch_platform.lib.feast_wide_store import layout_of

    source = view.batch_source
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}

    def col(name: str) -> str:
        return '"' + reverse.get(name, name).replace('"', '""') + '"'

    layout = layout_of(project, view)
    keys = list(view.join_keys)
    ts, created = col(source.timestamp_field), source.created_timestamp_column
    order = f"{ts} DESC" + (f", {col(created)} DESC" if created else "")
    select = [wide_store.duckdb_key_expr(keys, [col(k) for k in keys]), f"epoch_us({ts})",
              f"epoch_us({col(created)})" if created else "NULL"]
    select += [wide_store.duckdb_value_expr(kind, col(f)) for f, kind in layout.features.items()]
    own = duck is None
    con = duckdb.connect() if own else duck
    try:
        if own:
            con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            f"SELECT {', '.join(select)} FROM read_parquet({_sql_path(source.path)}) "
            f"WHERE {ts} >= ?::TIMESTAMPTZ AND {ts} <= ?::TIMESTAMPTZ "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(col(k) for k in keys) or '1'} ORDER BY {order}) = 1",
            [_utc(start).isoformat(), _utc(end).isoformat()],
        ).fetchall()
    finally:
        if own:
            con.close()
    with wide_store.transaction(online):
        wide_store.write_rows(online, layout, rows)
    return len(rows)


def _epoch_us(ts: datetime) -> int:
    delta = _utc(ts) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
