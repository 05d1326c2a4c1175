"""Batch scoring: one day's entities scored by the registry's champion, written atomically and idempotently.

:func:`score_partition` does, for a model spec and a day D:

1. **Pin the models** at the start: the registry's ``champion`` (and ``challenger``, when one exists and differs)
   are resolved once and their artefacts loaded with the sha256 verified. A promotion during the run changes
   nothing in it: every row names the version that was champion when the run started.
2. **Spine**: the rows of the spec's scoring model (``marts.<scoring.model>``, one row per entity scheduled on D,
   known the day before) are copied to a parquet file, so the warehouse is held only for that copy.
3. **Score in chunks** of ``scoring.chunk_rows`` rows streamed from that file: features as of D's prediction
   cutoff through the feature store's point-in-time join (Feast's rules as one DuckDB query per chunk, no query
   compilation by Feast), the model's score, the cold-start fallback (below); each scored chunk is appended to a
   staging parquet file. Memory depends on the chunk size, not on the number of rows.
4. **Swap in one transaction**: ``DELETE`` the day's rows and ``INSERT`` the staged ones into
   ``predictions.<spec>`` (and ``predictions.<spec>_shadow`` for the challenger) and into
   ``predictions.<spec>_served_features``, then ``COMMIT``. A run that fails or is killed before the commit leaves
   the previous predictions of D untouched; after it, the new ones are whole. Re-running D replaces the same keys
   with the same scores (only ``run_id`` and ``scored_at`` differ).

Canary: while the registry's ``canary`` alias names the challenger, the spec's ``promotion.canary_share`` of the
keys (a stable hash of the key: :func:`batch_platform.lib.promotion.canary_selected`) is *served* by the challenger
(rows with alias ``canary`` in ``predictions.<spec>``) and the champion's score of those keys goes to the shadow
table instead: the two tables always hold both models' scores of every key, whichever serves it.

Served features: ``predictions.<spec>_served_features`` holds, per champion row of the day, the values the model
was given: ``partition_date``, the entity key, ``prediction_cutoff``, ``model_version``, ``run_id`` and one column
per model input under the training set's column name (:func:`served_feature_columns`: the spec's join keys and
passthrough features as the scoring model has them, every feature of the spec's Feast feature service as fetched).
Fallback rows are stored too (their features as fetched, mostly missing). The training set later compares its rows
with these (:mod:`batch_platform.lib.skew`). The challenger uses the same feature service: not stored twice. The
table's columns follow the spec: a new feature adds a column (older rows read it as null).

Cold start (documented fallback): a row whose entities have no row in one of the spec's
``scoring.fallback.required_feature_views`` (every feature of that view missing at the cutoff: a new plane, a new
route) is not scored by the model. It gets the label rate of its segment (``fallback.segment`` columns, e.g.
origin and carrier) over the last ``fallback.lookback_days`` days whose labels are final at the cutoff, or the
overall rate over those days when the segment has fewer than ``min_segment_rows`` labelled rows, and
``fallback_reason = "missing_features:<view>[+<view>...]"``. Model-scored rows have ``fallback_reason`` null.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.lib import model_ops, promotion, training
from batch_platform.lib.registry import CANARY, CHALLENGER, CHAMPION, ModelRegistry, ModelVersion
from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import EVENT_TIMESTAMP, LABEL_SCHEMA
from batch_platform.lib.warehouse import table_exists

log = logging.getLogger(__name__)

SCHEMA = "predictions"
SHADOW_SUFFIX = "_shadow"
SERVED_FEATURES_SUFFIX = "_served_features"
PARTITION = "partition_date"
MISSING_FEATURES = "missing_features"
SAMPLE_SCORE = "__score"
STALE_STAGING_S = 3600  # staging files of this spec and day older than this belong to a run that died: removed

Connect = Callable[..., ContextManager[duckdb.DuckDBPyConnection]]
"""``connect(read_only=...)`` -> a warehouse connection under the warehouse lock (``lib.warehouse.connect``)."""
OnEvent = Callable[[str, dict[str, Any]], None]
"""Called at each step: ``pinned``, ``spine``, ``chunk`` (rows done / total), ``staged``, ``deleted`` (inside the
transaction, before the insert), ``inserted`` (inside, before the commit), ``committed``."""


class ScoringError(RuntimeError):
    """Base class of the named scoring errors."""


class NoChampionError(ScoringError, LookupError):
    """The spec has no ``champion`` alias: nothing may be scored (train, gate and promote first)."""


class ScoringModelMissing(ScoringError):
    """The spec's scoring model (a dbt table) does not exist or lacks columns."""


class NothingToScore(ScoringError):
    """No entity of the day is in the scoring model (its schedule has not been loaded)."""


class NoFallbackRate(ScoringError):
    """Cold-start rows need a fallback rate but no label is final in the lookback window."""


class ScoringRowCountMismatch(ScoringError):
    """The staged or inserted rows differ from the spine's (the transaction is rolled back)."""


def table_name(spec: ModelSpec, *, shadow: bool = False) -> str:
    return f"{SCHEMA}.{spec.name}{SHADOW_SUFFIX if shadow else ''}"


def served_features_table(spec: ModelSpec) -> str:
    return f"{SCHEMA}.{spec.name}{SERVED_FEATURES_SUFFIX}"


def served_meta_columns(spec: ModelSpec) -> list[str]:
    """The bookkeeping columns of a served-features row (not model inputs)."""
    return [PARTITION, spec.entity.key, "prediction_cutoff", "model_version", "run_id"]


def served_feature_columns(spec: ModelSpec, views: dict[str, list[str]]) -> list[str]:
    """The model inputs stored per served row: the join keys and passthrough features (columns of the scoring
    model, as the training set takes them from the label model) and every feature of the spec's feature service
    (``views``: feature names per view, :meth:`FeatureStoreClient.service_views`)."""
    columns = list(dict.fromkeys([*spec.entity.join_keys, *spec.passthrough_features,
                                  *(f for features in views.values() for f in features)]))
    clash = sorted(set(columns) & set(served_meta_columns(spec)))
    if clash:
        raise ScoringError(f"{spec.name}: model inputs {clash} clash with the served-features bookkeeping columns")
    return columns


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------------------------------------------
# Models pinned at the start of a run
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PinnedModel:
    alias: str
    version: ModelVersion
    booster: Any
    categorical: list[str] | None

    @property
    def features(self) -> list[str]:
        return list(self.booster.feature_name())


Predict = Callable[["PinnedModel", pd.DataFrame], np.ndarray]


def local_predict(model: PinnedModel, frame: pd.DataFrame) -> np.ndarray:
    """The pinned model's scores of ``frame``, computed in this process."""
    return training.score(model.booster, frame, model.categorical)


def pin_models(registry: ModelRegistry, spec: ModelSpec) -> tuple[PinnedModel, PinnedModel | None]:
    """The champion (required) and the challenger (when it exists and is another version), artefacts verified."""
    champion = registry.get_alias(spec.name, CHAMPION)
    if champion is None:
        raise NoChampionError(f"{spec.name} has no champion in the registry: train, gate and promote a model first")
    pinned = PinnedModel(CHAMPION, champion, model_ops.load_model(champion), champion.fingerprint.get("categorical"))
    challenger = registry.get_alias(spec.name, CHALLENGER)
    shadow = None
    if challenger is not None and challenger.version != champion.version:
        shadow = PinnedModel(CHALLENGER, challenger, model_ops.load_model(challenger),
                             challenger.fingerprint.get("categorical"))
    return pinned, shadow


# ----------------------------------------------------------------------------------------------------------------
# Output rows
# ----------------------------------------------------------------------------------------------------------------
def output_schema(spec: ModelSpec) -> pa.Schema:
    return pa.schema([
        pa.field(PARTITION, pa.date32(), False),
        pa.field(spec.entity.key, pa.string(), False),
        pa.field("score", pa.float64(), False),
        pa.field("decision", pa.bool_()),
        pa.field("decision_threshold", pa.float64()),
        pa.field("model_version", pa.int64(), False),
        pa.field("model_sha256", pa.string(), False),
        pa.field("alias", pa.string(), False),
        pa.field("run_id", pa.string(), False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), False),
        pa.field("prediction_cutoff", pa.timestamp("us", tz="UTC"), False),
        pa.field("feature_fingerprint", pa.string(), False),
        pa.field("fallback_reason", pa.string()),
    ])


def _ddl(spec: ModelSpec, table: str) -> str:
    types = {pa.date32(): "DATE", pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
             pa.int64(): "BIGINT", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}
    cols = [f"{_q(f.name)} {types[f.type]}{'' if f.nullable else ' NOT NULL'}" for f in output_schema(spec)]
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"


def feature_fingerprints(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Per row: a 16-hex-digit hash of the feature values the model saw (stable across processes)."""
    hashes = pd.util.hash_pandas_object(frame[features], index=False).to_numpy()
    return np.array([f"{h:016x}" for h in hashes], dtype=object)


# ----------------------------------------------------------------------------------------------------------------
# Fallback rates
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FallbackRates:
    segment: list[str]
    by_segment: dict[tuple, float]
    overall: float | None
    label_days: tuple[dt.date, dt.date]
    rows: int

    def rates_for(self, frame: pd.DataFrame) -> np.ndarray:
        if self.overall is None:
            raise NoFallbackRate(f"no final labels between {self.label_days[0]} and {self.label_days[1]}: "
                                 "cold-start rows cannot get a fallback rate")
        if not self.segment:
            return np.full(len(frame), self.overall)
        keys = list(zip(*(frame[c].tolist() for c in self.segment)))
        return np.array([self.by_segment.get(k, self.overall) for k in keys], dtype="float64")


def fallback_rates(con: duckdb.DuckDBPyConnection, spec: ModelSpec, day: dt.date) -> FallbackRates:
    """Label rates over the last ``lookback_days`` days whose labels are final at D's prediction cutoff."""
    fb = spec.scoring.fallback
    last = spec.last_final_day(spec.prediction_cutoff(day))
    first = last - dt.timedelta(days=fb.lookback_days - 1)
    table = f"{LABEL_SCHEMA}.{spec.label.model}"
    where = (f"{_q(spec.label.date_column)} BETWEEN DATE '{first}' AND DATE '{last}' "
             f"AND ({spec.label.sql}) IS NOT NULL")
    overall_rows = con.sql(f"SELECT count(*), avg(CAST({spec.label.sql} AS DOUBLE)) FROM {table} WHERE {where}"
                           ).fetchall()
    n, overall = overall_rows[0]
    by_segment: dict[tuple, float] = {}
    if fb.segment and n:
        cols = ", ".join(_q(c) for c in fb.segment)
        for *key, rate in con.sql(
            f"SELECT {cols}, avg(CAST({spec.label.sql} AS DOUBLE)) FROM {table} WHERE {where} "
            f"GROUP BY ALL HAVING count(*) >= {int(fb.min_segment_rows)}"
        ).fetchall():
            by_segment[tuple(key)] = float(rate)
    return FallbackRates(list(fb.segment), by_segment, float(overall) if n else None, (first, last), int(n))


# ----------------------------------------------------------------------------------------------------------------
# Scoring one partition
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ScoringResult:
    spec: str
    partition: dt.date
    table: str
    rows: int
    fallback_rows: int
    fallback_by_reason: dict[str, int]
    champion_version: int
    champion_sha256: str
    shadow_table: str | None
    shadow_version: int | None
    served_features_table: str
    run_id: str
    scored_at: dt.datetime
    prediction_cutoff: dt.datetime
    feature_definitions_fingerprint: str
    fallback_label_days: tuple[dt.date, dt.date]
    score_mean: float
    decision_rate: float | None
    chunks: int
    seconds: float
    replaced_rows: int  # rows of the previous predictions of D that the swap deleted
    timings: dict[str, float] = field(default_factory=dict)
    canary_version: int | None = None  # the challenger, serving a share of the keys (canary phase)
    canary_rows: int = 0
    sample: pd.DataFrame | None = None  # sample_rows model-scored rows: champion features + SAMPLE_SCORE

    @property
    def fallback_share(self) -> float:
        return self.fallback_rows / self.rows if self.rows else 0.0


def spine_columns(spec: ModelSpec) -> list[str]:
    return list(dict.fromkeys([spec.entity.key, spec.label.date_column, *spec.entity.join_keys,
                               *spec.passthrough_features, *spec.scoring.fallback.segment]))


def _check_scoring_model(con: duckdb.DuckDBPyConnection, spec: ModelSpec) -> None:
    model = spec.scoring.model
    existing = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [LABEL_SCHEMA, model]).fetchall()}
    if not existing:
        raise ScoringModelMissing(f"{spec.name}: scoring model {LABEL_SCHEMA}.{model} does not exist "
                                  "(land and load the schedule, then run the dbt feature models)")
    missing = [c for c in spine_columns(spec) if c not in existing]
    if missing:
        raise ScoringModelMissing(f"{spec.name}: scoring model {LABEL_SCHEMA}.{model} has no column(s) {missing}")


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def score_partition(
    *,
    spec: ModelSpec,
    day: dt.date,
    connect: Connect,
    feature_store: Any,  # lib.feature_store.FeatureStoreClient
    registry: ModelRegistry,
    staging_dir: Path,
    run_id: str | None = None,
    chunk_rows: int | None = None,
    on_event: OnEvent | None = None,
    scored_at: dt.datetime | None = None,
    sample_rows: int = 0,
    predict: Predict | None = None,
) -> ScoringResult:
    """Score every entity of ``day`` with the champion (and the challenger into the shadow table); see the module
    docstring. Raises the named :class:`ScoringError` subclasses; the previous predictions of ``day`` are left
    as they were whenever it raises.

    ``sample_rows``: also return a seeded sample of at most that many model-scored rows (the champion's features
    and score, fallback rows left out) in ``ScoringResult.sample``, for drift checks; memory stays bounded.

    ``predict(model, frame) -> scores``: where the pinned models' predictions are computed (default: here;
    ``dask_scoring.ClusterScorer``: on a Dask cluster); the rows, the fallbacks and the commit are the same."""
    t0 = time.perf_counter()
    predict = predict or local_predict
    emit = on_event or (lambda event, info: None)
    timings: dict[str, float] = {}
    run_id = run_id or uuid.uuid4().hex
    chunk_rows = chunk_rows or spec.scoring.chunk_rows
    scored_at = (scored_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    cutoff = spec.prediction_cutoff(day)

    champion, challenger = pin_models(registry, spec)
    models = [champion] + ([challenger] if challenger else [])
    canary = registry.get_alias(spec.name, CANARY) if challenger else None
    canary_share = (spec.promotion.canary_share
                    if canary is not None and canary.version == challenger.version.version else 0.0)
    canary_rows = 0
    emit("pinned", {"champion": champion.version.version,
                    "challenger": challenger.version.version if challenger else None})

    staging_dir.mkdir(parents=True, exist_ok=True)
    for leftover in staging_dir.glob(f"{spec.name}-{day.isoformat()}-*.parquet"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - leftover.stat().st_mtime > STALE_STAGING_S:
                leftover.unlink()
    stem = f"{spec.name}-{day.isoformat()}-{run_id[:12]}"
    spine_path = staging_dir / f"{stem}.spine.parquet"
    staged = {m.alias: staging_dir / f"{stem}.{m.alias}.parquet" for m in models}
    staged_features = staging_dir / f"{stem}.served_features.parquet"
    try:
        # -- spine and fallback rates (the only warehouse read) --------------------------------------------------
        tb = time.perf_counter()
        with connect(read_only=True) as con:
            _check_scoring_model(con, spec)
            cols = ", ".join(_q(c) for c in spine_columns(spec))
            con.execute(
                f"COPY (SELECT {cols} FROM {LABEL_SCHEMA}.{spec.scoring.model} "
                f"WHERE {_q(spec.label.date_column)} = DATE '{day}' ORDER BY {_q(spec.entity.key)}) "
                f"TO {_sql_str(spine_path)} (FORMAT parquet)"
            )
            rates = fallback_rates(con, spec, day)
        total = pq.ParquetFile(spine_path).metadata.num_rows
        if total == 0:
            raise NothingToScore(f"{spec.name}: {LABEL_SCHEMA}.{spec.scoring.model} has no rows for {day} "
                                 "(is its schedule loaded and the dbt feature models built?)")
        timings["spine_s"] = round(time.perf_counter() - tb, 3)
        emit("spine", {"rows": total})

        views = feature_store.service_views(spec.feature_service)
        unknown = [v for v in spec.scoring.fallback.required_feature_views if v not in views]
        if unknown:
            raise ScoringError(f"{spec.name}: fallback.required_feature_views {unknown} are not in feature "
                               f"service {spec.feature_service} (views: {sorted(views)})")
        defs_fp = feature_store.definitions_fingerprint()
        served_columns = served_feature_columns(spec, views)
        spine_schema = pq.ParquetFile(spine_path).schema_arrow

        # -- score chunk by chunk into the staging files ---------------------------------------------------------
        schema = output_schema(spec)
        writers = {m.alias: pq.ParquetWriter(staged[m.alias], schema) for m in models}
        features_writer: pq.ParquetWriter | None = None  # its schema needs the first chunk's feature dtypes
        done = fallback_rows = chunks = 0
        picked = np.zeros(total, dtype=bool)
        if sample_rows:
            picked[np.random.default_rng(0).choice(total, size=min(sample_rows, total), replace=False)] = True
        samples: list[pd.DataFrame] = []
        by_reason: dict[str, int] = {}
        score_sum = decision_sum = 0.0
        ts = {"features_s": 0.0, "score_s": 0.0}
        try:
            for batch in pq.ParquetFile(spine_path).iter_batches(batch_size=chunk_rows):
                entities = batch.to_pandas()
                entities[spec.label.date_column] = pd.to_datetime(entities[spec.label.date_column]).dt.date
                entities[EVENT_TIMESTAMP] = pd.Timestamp(cutoff)
                tf = time.perf_counter()
                frame = feature_store.historical_features(entities, spec.feature_service,
                                                          timestamp_column=EVENT_TIMESTAMP)
                ts["features_s"] += time.perf_counter() - tf
                reasons = _cold_start_reasons(frame, spec, views)
                cold = reasons.notna().to_numpy()
                fallback = rates.rates_for(frame.loc[cold]) if cold.any() else np.empty(0)
                tsc = time.perf_counter()
                by_alias = {}
                for m in models:
                    scores = np.asarray(predict(m, frame), dtype="float64").copy()
                    scores[cold] = fallback
                    by_alias[m.alias] = scores
                in_canary = (promotion.canary_selected(frame[spec.entity.key].astype(str).tolist(), canary_share,
                                                       spec.name) if canary_share else np.zeros(len(frame), bool))
                canary_rows += int(in_canary.sum())
                for m in models:
                    scores = by_alias[m.alias]
                    table = _output_table(spec, schema, day, frame, scores, reasons, m, run_id, scored_at, cutoff)
                    if in_canary.any():
                        # canary keys: the challenger is served, the champion's score goes to the shadow table
                        other = challenger if m.alias == CHAMPION else champion
                        swapped = _output_table(spec, schema, day, frame, by_alias[other.alias], reasons,
                                                dataclasses.replace(other, alias=CANARY) if m.alias == CHAMPION
                                                else other, run_id, scored_at, cutoff)
                        table = pa.concat_tables([table.filter(pa.array(~in_canary)),
                                                  swapped.filter(pa.array(in_canary))])
                    writers[m.alias].write_table(table)
                    if m.alias == CHAMPION:
                        served = _served_features_table(spec, day, frame, served_columns, spine_schema, m, run_id,
                                                        cutoff)
                        if features_writer is None:
                            features_writer = pq.ParquetWriter(staged_features, served.schema)
                        features_writer.write_table(served)
                        keep = picked[done:done + len(frame)] & ~cold
                        if keep.any():
                            samples.append(frame.loc[keep, m.features].assign(**{SAMPLE_SCORE: scores[keep]}))
                        score_sum += float(scores.sum())
                        if spec.scoring.decision_threshold is not None:
                            decision_sum += float((scores >= spec.scoring.decision_threshold).sum())
                ts["score_s"] += time.perf_counter() - tsc
                done += len(frame)
                chunks += 1
                fallback_rows += int(cold.sum())
                for reason, n in reasons.value_counts().items():
                    by_reason[str(reason)] = by_reason.get(str(reason), 0) + int(n)
                emit("chunk", {"done": done, "total": total, "chunk": chunks})
                log.info("%s %s: scored %d / %d rows (%d chunk(s))", spec.name, day, done, total, chunks)
        finally:
            for w in [*writers.values(), *([features_writer] if features_writer else [])]:
                w.close()
        timings.update({k: round(v, 3) for k, v in ts.items()})
        if done != total:
            raise ScoringRowCountMismatch(f"{spec.name} {day}: scored {done} rows of a {total}-row spine")
        emit("staged", {"rows": done})

        # -- the swap: one transaction per run ------------------------------------------------------------------
        tw = time.perf_counter()
        replaced = _swap_in(connect, spec, day, staged, staged_features, models, total, emit)
        timings["swap_s"] = round(time.perf_counter() - tw, 3)
        emit("committed", {"rows": total})
    finally:
        for path in [spine_path, *staged.values(), staged_features]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    return ScoringResult(
        spec=spec.name, partition=day, table=table_name(spec), rows=total, fallback_rows=fallback_rows,
        fallback_by_reason=by_reason, champion_version=champion.version.version,
        champion_sha256=champion.version.sha256,
        shadow_table=table_name(spec, shadow=True) if challenger else None,
        shadow_version=challenger.version.version if challenger else None,
        canary_version=challenger.version.version if canary_share else None, canary_rows=canary_rows,
        served_features_table=served_features_table(spec), run_id=run_id, scored_at=scored_at,
        prediction_cutoff=cutoff, feature_definitions_fingerprint=defs_fp, fallback_label_days=rates.label_days,
        score_mean=score_sum / total,
        decision_rate=(decision_sum / total) if spec.scoring.decision_threshold is not None else None,
        chunks=chunks, seconds=round(time.perf_counter() - t0, 3), replaced_rows=replaced, timings=timings,
        sample=pd.concat(samples, ignore_index=True) if samples else None,
    )


def _cold_start_reasons(frame: pd.DataFrame, spec: ModelSpec, views: dict[str, list[str]]) -> pd.Series:
    """``missing_features:<view>[+<view>]`` for rows without any feature of a required view, else null."""
    missing_by_view = {v: frame[views[v]].isna().all(axis=1).to_numpy()
                       for v in spec.scoring.fallback.required_feature_views}
    reasons = np.full(len(frame), None, dtype=object)
    if not missing_by_view:
        return pd.Series(reasons, index=frame.index, dtype=object)
    for i in np.flatnonzero(np.logical_or.reduce(list(missing_by_view.values()))):
        reasons[i] = MISSING_FEATURES + ":" + "+".join(v for v, m in missing_by_view.items() if m[i])
    return pd.Series(reasons, index=frame.index, dtype=object)


def _output_table(spec, schema, day, frame, scores, reasons, model: PinnedModel, run_id, scored_at, cutoff):
    n = len(frame)
    threshold = spec.scoring.decision_threshold
    return pa.Table.from_arrays([
        pa.array([day] * n, pa.date32()),
        pa.array(frame[spec.entity.key].astype(str).tolist(), pa.string()),
        pa.array(scores, pa.float64()),
        pa.array(scores >= threshold if threshold is not None else [None] * n, pa.bool_()),
        pa.array([threshold] * n, pa.float64()),
        pa.array([model.version.version] * n, pa.int64()),
        pa.array([model.version.sha256] * n, pa.string()),
        pa.array([model.alias] * n, pa.string()),
        pa.array([run_id] * n, pa.string()),
        pa.array([scored_at] * n, pa.timestamp("us", tz="UTC")),
        pa.array([cutoff] * n, pa.timestamp("us", tz="UTC")),
        pa.array(feature_fingerprints(frame, model.features), pa.string()),
        pa.array(reasons.tolist(), pa.string()),
    ], schema=schema)


def _served_features_table(spec: ModelSpec, day: dt.date, frame: pd.DataFrame, columns: list[str],
                           spine_schema: pa.Schema, model: PinnedModel, run_id: str,
                           cutoff: dt.datetime) -> pa.Table:
    """One served-features row per scored row. Spine columns keep the scoring model's types; Feast features keep
    the types the client guarantees (numbers float64, timestamps UTC, anything else text), so every chunk has the
    same schema."""
    n = len(frame)
    arrays = [
        pa.array([day] * n, pa.date32()),
        pa.array(frame[spec.entity.key].astype(str).tolist(), pa.string()),
        pa.array([cutoff] * n, pa.timestamp("us", tz="UTC")),
        pa.array([model.version.version] * n, pa.int64()),
        pa.array([run_id] * n, pa.string()),
    ]
    fields = [pa.field(PARTITION, pa.date32(), False), pa.field(spec.entity.key, pa.string(), False),
              pa.field("prediction_cutoff", pa.timestamp("us", tz="UTC"), False),
              pa.field("model_version", pa.int64(), False), pa.field("run_id", pa.string(), False)]
    for col in columns:
        values = frame[col]
        if col in spine_schema.names:
            typ = spine_schema.field(col).type
        elif pd.api.types.is_datetime64_any_dtype(values.dtype):
            typ = pa.timestamp("us", tz="UTC")
        elif pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            typ = pa.float64()
        else:
            typ = pa.string()
        if pa.types.is_string(typ) and not pd.api.types.is_string_dtype(values.dtype):
            values = values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))
        arrays.append(pa.array(values, typ, from_pandas=True))
        fields.append(pa.field(col, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _ensure_served_features_table(con: duckdb.DuckDBPyConnection, spec: ModelSpec, staged: Path) -> None:
    """Create the served-features table from the staged file's columns, or add the columns it lacks (a spec or
    feature service that gained a model input)."""
    table = served_features_table(spec)
    source = f"read_parquet({_sql_str(staged)})"
    if not table_exists(con, SCHEMA, table.split(".", 1)[1]):
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {source} LIMIT 0")
        return
    existing = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [SCHEMA, table.split(".", 1)[1]]).fetchall()}
    for name, typ, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall():
        if name not in existing:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {_q(name)} {typ}")


SWAP_MEMORY_LIMIT = "128MB"


def _swap_in(connect: Connect, spec: ModelSpec, day: dt.date, staged: dict[str, Path], staged_features: Path,
             models: list[PinnedModel], expected: int, emit: OnEvent) -> int:
    """Replace the day's rows of each model's table, and of the served-features table, with the staged rows in
    one transaction; returns the number of rows the champion table held for the day before."""
    replaced = 0
    with connect(read_only=False) as con:
        # DuckDB keeps what the transaction wrote in its buffer pool until the commit (all of the day's served
        # features and predictions): capped, it spills instead, so memory does not grow with the day's rows
        con.execute(f"SET memory_limit = '{SWAP_MEMORY_LIMIT}'")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for m in models:
            con.execute(_ddl(spec, table_name(spec, shadow=m.alias != CHAMPION)))
        con.execute("BEGIN TRANSACTION")
        try:
            _ensure_served_features_table(con, spec, staged_features)
            features_table = served_features_table(spec)
            con.execute(f"DELETE FROM {features_table} WHERE {PARTITION} = ?", [day])
            con.execute(f"INSERT INTO {features_table} BY NAME SELECT * FROM read_parquet({_sql_str(staged_features)})")
            ((stored,),) = con.execute(f"SELECT count(*) FROM {features_table} WHERE {PARTITION} = ?",
                                       [day]).fetchall()
            if stored != expected:
                raise ScoringRowCountMismatch(f"{features_table} {day}: {stored} rows after the insert, "
                                              f"expected {expected}")
            for m in models:
                table = table_name(spec, shadow=m.alias != CHAMPION)
                ((before,),) = con.execute(f"SELECT count(*) FROM {table} WHERE {PARTITION} = ?", [day]).fetchall()
                con.execute(f"DELETE FROM {table} WHERE {PARTITION} = ?", [day])
                if m.alias == CHAMPION:
                    replaced = int(before)
                emit("deleted", {"table": table, "rows": int(before)})
                con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet({_sql_str(staged[m.alias])})")
                ((after,),) = con.execute(f"SELECT count(*) FROM {table} WHERE {PARTITION} = ?", [day]).fetchall()
                if after != expected:
                    raise ScoringRowCountMismatch(f"{table} {day}: {after} rows after the insert, expected {expected}")
            emit("inserted", {"rows": expected})
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    return replaced


# ----------------------------------------------------------------------------------------------------------------
# Reading predictions back
# ----------------------------------------------------------------------------------------------------------------
def read_partition(con: duckdb.DuckDBPyConnection, spec: ModelSpec, day: dt.date, *,
                   shadow: bool = False) -> pd.DataFrame:
    """The stored predictions of ``day`` ordered by key (empty frame when there are none)."""
    table = table_name(spec, shadow=shadow)
    if not table_exists(con, SCHEMA, table.split(".", 1)[1]):
        return pd.DataFrame(columns=output_schema(spec).names)
    return con.sql(f"SELECT * FROM {table} WHERE {PARTITION} = DATE '{day}' ORDER BY {_q(spec.entity.key)}").df()


def read_served_features(con: duckdb.DuckDBPyConnection, spec: ModelSpec, first_cutoff: dt.datetime,
                         last_cutoff: dt.datetime) -> pd.DataFrame:
    """The served-features rows whose prediction cutoff lies in ``[first_cutoff, last_cutoff]`` (an empty frame
    when nothing was scored yet)."""
    table = served_features_table(spec)
    if not table_exists(con, SCHEMA, table.split(".", 1)[1]):
        return pd.DataFrame(columns=served_meta_columns(spec))
    return con.execute(f"SELECT * FROM {table} WHERE prediction_cutoff BETWEEN ? AND ? "
                       f"ORDER BY {PARTITION}, {_q(spec.entity.key)}", [first_cutoff, last_cutoff]).df()


def copy_served_features(con: duckdb.DuckDBPyConnection, spec: ModelSpec, first_cutoff: dt.datetime,
                         last_cutoff: dt.datetime, path: Path) -> int:
    """The rows of :func:`read_served_features` written to the parquet file ``path`` in entity-key order (then
    partition), in bounded memory; returns the rows written (0, and no file, when nothing was scored yet)."""
    table = served_features_table(spec)
    if not table_exists(con, SCHEMA, table.split(".", 1)[1]):
        return 0
    rows = con.execute(f"COPY (SELECT * FROM {table} WHERE prediction_cutoff BETWEEN ? AND ? "
                       f"ORDER BY {_q(spec.entity.key)}, {PARTITION}) TO {_sql_str(path)} (FORMAT parquet)",
                       [first_cutoff, last_cutoff]).fetchall()
    return int(rows[0][0])


def partition_counts(con: duckdb.DuckDBPyConnection, spec: ModelSpec, day: dt.date) -> tuple[int, int]:
    """(rows, keys appearing more than once) of the stored predictions of ``day``, counted in the warehouse."""
    key = _q(spec.entity.key)
    rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {table_name(spec)} "
                                 f"WHERE {PARTITION} = ?", [day]).fetchall()[0]
    return int(rows), int(rows - distinct)


def iter_partition(con: duckdb.DuckDBPyConnection, spec: ModelSpec, day: dt.date, *,
                   batch_rows: int) -> Iterator[pd.DataFrame]:
    """The stored predictions of ``day`` in frames of at most ``batch_rows`` rows."""
    reader = con.sql(f"SELECT * FROM {table_name(spec)} WHERE {PARTITION} = DATE '{day}' "
                     f"ORDER BY {_q(spec.entity.key)}").to_arrow_reader(batch_rows)
    for batch in reader:
        yield batch.to_pandas()


def export_predictions(con: duckdb.DuckDBPyConnection, spec: ModelSpec, path: Path) -> None:
    """Write the spec's whole prediction table to parquet (the prediction view's batch source), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    con.execute(f"COPY (SELECT *, scored_at AS event_timestamp FROM {table_name(spec)} "
                f"ORDER BY {PARTITION}, {_q(spec.entity.key)}) TO {_sql_str(tmp)} (FORMAT parquet)")
    tmp.replace(path)

