"""Serving predictions by key: push a scored day into the online store, look keys up.

Predictions reach the online store as each spec's Feast view ``<spec>_predictions`` (built per spec by
``batch_platform/lib/feast_declarations.py``); its TTL (``scoring.online_ttl_hours``, about 1.5 batch intervals) decides
how long a prediction is served after it was scored. A day's predictions are written in one transaction on the
default (wide SQLite) store, so a reader sees the previous day's rows or all of the new ones.

:class:`PredictionReader` answers lookups: on the wide SQLite store it reads the row directly (``sqlite3``, the
statement prepared once, the view's layout and TTL read from the store's catalog and re-read when ``feast apply``
changes it; no Feast import, so ``batch-platform predict`` starts in well under a second); on Redis it goes through
Feast's ``get_online_features`` with the store opened once. Each answer is a :class:`Prediction` with its model
version and age, or a :class:`NoPrediction` that says why there is none (never scored / not pushed, or expired).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch_platform.lib import wide_store

if TYPE_CHECKING:  # pandas, scoring and the specs' models: only where pushing needs them
    import pandas as pd

    from batch_platform.lib.specs import ModelSpec

FIELDS = ("score", "decision", "model_version", "model_sha256", "alias", "run_id", "partition_date",
          "fallback_reason", "scored_at")
PUSH_ROWS = 20_000  # rows per frame handed to the store (bounded memory; one transaction for the day on SQLite)
FOUND, NOT_FOUND, EXPIRED = "found", "not_found", "expired"  # an answer's status
REFRESH_S = 1.0  # how often a reader re-reads a view's layout (TTL, features) from the store's catalog


def view_name(spec: ModelSpec | ServedSpec) -> str:
    return f"{spec.name}_predictions"


def push_source_name(spec: ModelSpec) -> str:
    return f"{spec.name}_predictions_push"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ takes 2 µs of a lookup's ~12
class Prediction:
    spec: str
    key: str
    score: float
    decision: bool | None
    model_version: int
    model_sha256: str
    alias: str
    run_id: str
    partition_date: str
    fallback_reason: str | None
    scored_at: dt.datetime
    age: dt.timedelta
    ttl: dt.timedelta

    found = True
    status = FOUND

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(found=True, status=FOUND, scored_at=self.scored_at.isoformat(), age_seconds=round(self.age.total_seconds(), 1),
                 ttl_seconds=self.ttl.total_seconds())
        del d["age"], d["ttl"]
        return d


@dataclass(frozen=True)
class NoPrediction:
    spec: str
    key: str
    reason: str
    status: str = NOT_FOUND  # NOT_FOUND (never scored and pushed) or EXPIRED (older than the view's TTL)

    found = False

    def to_dict(self) -> dict[str, Any]:
        return {"found": False, **asdict(self)}


def push_frame(spec: ModelSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """Stored prediction rows -> the view's frame (key, event timestamp, the view's fields)."""
    import pandas as pd

    from batch_platform.lib import scoring

    out = pd.DataFrame({
        spec.entity.key: rows[spec.entity.key].astype(str),
        "event_timestamp": pd.to_datetime(rows["scored_at"], utc=True),
        "score": rows["score"].astype("float64"),
        "decision": rows["decision"].map(lambda v: None if pd.isna(v) else int(bool(v))).astype("Int64"),
        "model_version": rows["model_version"].astype("int64"),
        "model_sha256": rows["model_sha256"].astype(str),
        "alias": rows["alias"].astype(str),
        "run_id": rows["run_id"].astype(str),
        "partition_date": pd.to_datetime(rows[scoring.PARTITION]).dt.strftime("%Y-%m-%d"),
        "fallback_reason": rows["fallback_reason"].fillna("").astype(str),
        "scored_at": pd.to_datetime(rows["scored_at"], utc=True),
    })
    return out


def push_partition(con, feature_store, spec: ModelSpec, day: dt.date, *, batch_rows: int = PUSH_ROWS) -> int:
    """Write the stored (committed) predictions of ``day`` to the online store (one transaction on SQLite);
    returns the rows written."""
    from batch_platform.lib import scoring

    frames = (push_frame(spec, rows) for rows in scoring.iter_partition(con, spec, day, batch_rows=batch_rows))
    return feature_store.write_online(view_name(spec), frames)


def lookup(feature_store, spec: ModelSpec | ServedSpec, key: str, *, now: dt.datetime | None = None
           ) -> Prediction | NoPrediction:
    """The latest served prediction of ``key`` for ``spec`` through Feast's ``get_online_features``, or why there
    is none (any online store; :class:`PredictionReader` is the fast path)."""
    spec = ServedSpec.of(spec)
    view = view_name(spec)
    refs = [f"{view}:{f}" for f in FIELDS]
    (row,) = feature_store.online_features(refs, [{spec.entity_key: key}])
    ttl = feature_store.view_ttl(view) or dt.timedelta(0)
    return answer(spec.name, spec.entity_key, key, row, ttl, now)


def answer(spec: str, entity: str, key: str, row: dict[str, Any] | None, ttl: dt.timedelta,
           now: dt.datetime | None = None) -> Prediction | NoPrediction:
    """A stored row of the predictions view (None: no row) judged at ``now``."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if row is None or row.get("score") is None:
        return NoPrediction(spec, key, f"no prediction for {entity}={key!r}: it was never scored "
                            "and pushed (unknown key, or its day has not been scored yet)")
    scored_at = _as_utc(row["scored_at"])
    age = now - scored_at
    if ttl and age > ttl:
        return NoPrediction(spec, key, f"prediction expired: scored {scored_at.isoformat()} "
                            f"({_human(age)} ago) by v{row['model_version']}, served for {_human(ttl)} "
                            "(the day's scoring has not run since)", EXPIRED)
    decision = row.get("decision")
    return Prediction(
        spec=spec, key=key, score=float(row["score"]), decision=None if decision is None else bool(decision),
        model_version=int(row["model_version"]), model_sha256=row["model_sha256"], alias=row["alias"],
        run_id=row["run_id"], partition_date=row["partition_date"], fallback_reason=row["fallback_reason"] or None,
        scored_at=scored_at, age=age, ttl=ttl,
    )


@dataclass(frozen=True)
class ServedSpec:
    """What serving needs of a model spec: its name and the entity key its predictions are served by."""

    name: str
    entity_key: str

    @classmethod
    def of(cls, spec: ModelSpec | ServedSpec) -> ServedSpec:
        return spec if isinstance(spec, ServedSpec) else cls(spec.name, spec.entity.key)


def served_specs(directory: Path | None = None) -> dict[str, ServedSpec]:
    """Name and entity key of every model spec, read straight from the spec files: a lookup needs nothing else,
    and validating the specs (pydantic, the time model, SQL parsing) would cost more than the lookup itself. The
    specs are validated where they are used to train and score."""
    import yaml

    from batch_platform.lib import project

    out = {}
    for path in sorted((directory or project.specs_dir()).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        try:
            out[raw["name"]] = ServedSpec(str(raw["name"]), str(raw["entity"]["key"]))
        except (KeyError, TypeError):
            raise UnknownSpec(f"{path}: not a model spec (no name and entity.key)") from None
    return out


class UnknownSpec(LookupError):
    """A lookup named a model spec the platform does not have."""


@dataclass(frozen=True)
class OnlineTarget:
    """Where predictions are served from: the wide SQLite file at ``path``, or (``path`` None: Redis, or another
    store type declared in ``feature_store.yaml``) through Feast."""

    project: str
    path: Path | None

    @classmethod
    def from_settings(cls) -> OnlineTarget:
        """The platform's configured online store, read without opening Feast."""
        import os

        import yaml

        from batch_platform import settings

        settings.export_defaults()
        raw = yaml.safe_load(os.path.expandvars((settings.FEATURE_REPO_DIR / "feature_store.yaml").read_text()))
        store = raw.get("online_store") or {}
        if settings.redis_connection() is not None or store.get("type") != wide_store.FEAST_TYPE:
            return cls(project=raw["project"], path=None)
        path = Path(store["path"])
        return cls(project=raw["project"], path=path if path.is_absolute() else settings.FEATURE_REPO_DIR / path)


class PredictionReader:
    """Lookups by key for a set of specs, with everything resolved once (see the module docstring). Thread-safe
    for readers (one SQLite connection, statements serialized by a lock: each takes microseconds)."""

    def __init__(self, specs: dict[str, ModelSpec | ServedSpec], target: OnlineTarget | None = None,
                 feature_store=None):
        self.specs = {name: ServedSpec.of(s) for name, s in specs.items()}
        self.target = target or OnlineTarget.from_settings()
        self._feature_store = feature_store
        self._con = None
        self._readers: dict[str, tuple[wide_store.Reader, dt.timedelta, float]] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def direct(self) -> bool:
        """Reads the wide SQLite rows itself (else through Feast)."""
        return self.target.path is not None

    @property
    def feature_store(self):
        if self._feature_store is None:
            from batch_platform.lib.feature_store import FeatureStoreClient

            self._feature_store = FeatureStoreClient()
        return self._feature_store

    def spec(self, name: str) -> ServedSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownSpec(f"unknown model spec {name!r}; specs: {sorted(self.specs)}") from None

    def ready(self) -> tuple[bool, str]:
        """Whether lookups can be answered from the store (for a readiness probe), and why not."""
        if not self.direct:
            try:
                self.feature_store.store  # opens Feast (and pings Redis)
            except Exception as exc:  # noqa: BLE001 -- the probe reports any failure to open the store
                return False, f"{type(exc).__name__}: {exc}"
            return True, "feast online store open"
        if not self.target.path.exists():
            return False, f"no online store at {self.target.path} (nothing applied or scored yet)"
        with self._lock:
            missing = [n for n in self.specs if self._reader(n) is None]
        if missing:
            return False, f"predictions views not applied to {self.target.path}: {missing}"
        return True, f"wide SQLite store {self.target.path}"

    def lookup(self, spec: str, key: str, *, now: dt.datetime | None = None) -> Prediction | NoPrediction:
        return self.lookup_many(spec, [key], now=now)[0]

    def lookup_many(self, spec: str, keys: Sequence[str], *, now: dt.datetime | None = None
                    ) -> list[Prediction | NoPrediction]:
        s = self.spec(spec)
        if not self.direct:
            return [lookup(self.feature_store, s, k, now=now) for k in keys]
        with self._lock:
            resolved = self._reader(spec)
            if resolved is None:
                rows: list = [None] * len(keys)
                ttl = dt.timedelta(0)
            else:
                reader, ttl, _ = resolved
                rows = [reader.get(keys[0])] if len(keys) == 1 else reader.get_many(list(keys))
        return [answer(spec, s.entity_key, k, None if r is None else r.values, ttl, now) for k, r in zip(keys, rows)]

    def _reader(self, spec: str) -> tuple[wide_store.Reader, dt.timedelta, float] | None:
        """The spec's reader, its layout re-read when the catalog changed (checked at most every REFRESH_S);
        None while the view is not in the store."""
        clock = time.monotonic()
        cached = self._readers.get(spec)
        if cached is not None and clock - self._checked.get(spec, 0.0) < REFRESH_S:
            return cached
        self._checked[spec] = clock
        if self._con is None:
            if not self.target.path.exists():
                return None
            self._con = wide_store.connect(self.target.path, read_only=True)
        view = view_name(self.specs[spec])
        stamp = wide_store.layout_stamp(self._con, self.target.project, view)
        if stamp is None:
            self._readers.pop(spec, None)
            return None
        if cached is None or cached[2] != stamp:
            layout = wide_store.layout_of(self._con, self.target.project, view)
            ttl = dt.timedelta(seconds=layout.ttl_seconds or 0)
            cached = (wide_store.Reader(self._con, layout, FIELDS), ttl, stamp)
            self._readers[spec] = cached
        return cached

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._readers.clear()


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    import pandas as pd

    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _human(delta: dt.timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
