"""Feast (feature_repo/ + batch_platform.lib.feature_store), with real Feast, DuckDB and parquet in tmp_path.

- point-in-time joins (the platform's DuckDB ASOF join) equal Feast's own ``get_historical_features`` frame for frame
  and an independent brute force (ties, created-timestamp tie-breaks, TTL edges, absent
  keys), for several seeds, and the brute force is shown to catch a wrong join (negative controls);
- the online store after batched materialization equals the offline join at the materialization end;
- the definitions fingerprint is stable, path-independent, honours .feastignore and follows a TTL change;
- the real repo applies in-process and with `feast apply` in its folder, identically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from batch_platform import settings
from batch_platform.lib import feature_store
from batch_platform.lib.feature_store import (
    EntityFrameError,
    FeatureStoreBusy,
    FeatureStoreClient,
    FeatureStoreNotApplied,
    FeatureTableSchemaError,
    MaterializationWouldRewind,
    MissingFeatureTable,
    UnknownFeatureObject,
    is_prediction_view,
)

UTC = timezone.utc
REAL_VIEWS = {
    # view -> (entity column, ttl)
    "plane_daily_features": ("tailnum", timedelta(days=3)),
    "route_daily_features": ("route", timedelta(days=3)),
    "carrier_daily_features": ("carrier", timedelta(days=3)),
    "origin_weather_features": ("origin", timedelta(days=2)),
    "plane_attributes": ("tailnum", timedelta(0)),
}
PA_TYPES = {
    "INT64": pa.int64(),
    "DOUBLE": pa.float64(),
    "STRING": pa.string(),
    "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC"),
}


def point_env(mp: pytest.MonkeyPatch, base: Path) -> Path:
    """The three Feast settings under ``base``; returns the features folder."""
    features = base / "features"
    features.mkdir(parents=True, exist_ok=True)
    mp.setenv(settings.FEATURES_VAR, str(features))
    mp.setenv(settings.PREDICTIONS_EXPORT_VAR, str(base / "predictions_export"))
    mp.setenv(settings.FEAST_REGISTRY_VAR, str(base / "feast" / "registry.db"))
    mp.setenv(settings.ONLINE_STORE_VAR, str(base / "feast" / "online_store.db"))
    return features


@pytest.fixture
def features_dir(tmp_path, monkeypatch) -> Path:
    return point_env(monkeypatch, tmp_path)


def write_parquet(path: Path, frame: pd.DataFrame, types: dict[str, pa.DataType]) -> None:
    """Timestamps as microsecond UTC (what Feast's DuckDB store can read)."""
    arrays = {c: pa.array(frame[c], type=types[c], from_pandas=True) for c in frame.columns}
    pq.write_table(pa.table(arrays), path)


# =================================================================================================================
# 1. Point-in-time correctness vs brute force (own test repo: three views, TTL 2 days / 6 hours / none)
# =================================================================================================================
PIT_REPO = '''
import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String, UnixTimestamp

DIR = os.environ["BATCH_PLATFORM_FEATURES_DIR"]

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)

user_stats = FeatureView(
    name="user_stats", entities=[user], ttl=timedelta(days=2),
    schema=[Field(name="user_id", dtype=String), Field(name="u_value", dtype=Float64),
            Field(name="u_count", dtype=Int64), Field(name="u_valid_from", dtype=UnixTimestamp)],
    source=FileSource(name="user_stats", path=f"{DIR}/user_stats.parquet", file_format=ParquetFormat(),
                      timestamp_field="feature_ts", created_timestamp_column="created_ts"),
)
merchant_stats = FeatureView(
    name="merchant_stats", entities=[merchant], ttl=timedelta(hours=6),
    schema=[Field(name="merchant_id", dtype=Int64), Field(name="m_value", dtype=Float64),
            Field(name="m_label", dtype=String)],
    source=FileSource(name="merchant_stats", path=f"{DIR}/merchant_stats.parquet", file_format=ParquetFormat(),
                      timestamp_field="feature_ts"),
)
user_static = FeatureView(
    name="user_static", entities=[user], ttl=timedelta(0),
    schema=[Field(name="user_id", dtype=String), Field(name="s_value", dtype=Float64)],
    source=FileSource(name="user_static", path=f"{DIR}/user_static.parquet", file_format=ParquetFormat(),
                      timestamp_field="feature_ts"),
)
pit_service = FeatureService(name="pit_service", features=[user_stats, merchant_stats, user_static])
'''


@dataclass(frozen=True)
class PitView:
    name: str
    key: str
    ttl: timedelta
    features: tuple[str, ...]
    created: bool


PIT_VIEWS = (
    PitView("user_stats", "user_id", timedelta(days=2), ("u_value", "u_count", "u_valid_from"), True),
    PitView("merchant_stats", "merchant_id", timedelta(hours=6), ("m_value", "m_label"), False),
    PitView("user_static", "user_id", timedelta(0), ("s_value",), False),
)
T0 = pd.Timestamp("2021-03-01", tz="UTC")
SPAN_S = 10 * 86_400
USERS = [f"u{i:02d}" for i in range(30)]  # entity rows also use u30..u34: absent from every table
MERCHANTS = list(range(20))  # entity rows also use 20..24


@pytest.fixture(scope="module")
def pit_repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("pit")
    with pytest.MonkeyPatch.context() as mp:
        features = point_env(mp, base)
        repo = base / "repo"
        repo.mkdir()
        shutil.copy(settings.FEATURE_REPO_DIR / "feature_store.yaml", repo / "feature_store.yaml")
        (repo / "pit_repo.py").write_text(PIT_REPO)
        client = FeatureStoreClient(repo)
        summary = client.apply()
        assert (summary.feature_views, summary.feature_services) == (3, 1)
        yield client, features


def make_pit_tables(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Random feature rows with gaps, absent keys, and (user_stats) duplicate timestamps told apart by created."""
    tables = {}
    for view in PIT_VIEWS:
        keys = USERS if view.key == "user_id" else MERCHANTS
        rows = []
        for key in keys:
            if view.name == "user_static":
                n = int(rng.integers(0, 3))
            else:
                n = int(rng.integers(0, 14))  # 0 rows: the key is absent from this table
            # whole minutes, so entity rows land exactly on feature timestamps and TTL edges
            minutes = np.sort(rng.choice(SPAN_S // 60, size=n, replace=False))
            for m in minutes:
                ts = T0 + pd.Timedelta(minutes=int(m))
                created = ts + pd.Timedelta(seconds=int(rng.integers(0, 3600)))
                rows.append((key, ts, created))
                if view.created and rng.random() < 0.35:  # same feature_ts, later created: must win
                    rows.append((key, ts, created + pd.Timedelta(seconds=int(rng.integers(1, 600)))))
        frame = pd.DataFrame(rows, columns=[view.key, "feature_ts", "created_ts"])
        n = len(frame)
        if view.name == "user_stats":
            frame["u_value"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
            frame["u_count"] = pd.array(rng.integers(0, 1000, n), dtype="Int64")
            frame.loc[rng.random(n) < 0.1, "u_count"] = pd.NA
            frame["u_valid_from"] = frame["feature_ts"]
        elif view.name == "merchant_stats":
            frame["m_value"] = rng.normal(size=n)
            frame["m_label"] = [f"label-{i}" for i in rng.integers(0, 10**6, n)]
            frame = frame.drop(columns="created_ts")
        else:
            frame["s_value"] = rng.normal(size=n)
            frame = frame.drop(columns="created_ts")
        tables[view.name] = frame.sample(frac=1.0, random_state=int(rng.integers(1 << 31)))  # unsorted file
    return tables


def write_pit_tables(features: Path, tables: dict[str, pd.DataFrame]) -> None:
    types = {
        "user_id": pa.string(), "merchant_id": pa.int64(), "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"), "u_value": pa.float64(), "u_count": pa.int64(),
        "u_valid_from": pa.timestamp("us", tz="UTC"), "m_value": pa.float64(), "m_label": pa.string(),
        "s_value": pa.float64(),
    }
    for name, frame in tables.items():
        write_parquet(features / f"{name}.parquet", frame, types)


def make_entity_rows(rng: np.random.Generator, tables: dict[str, pd.DataFrame], n: int = 320) -> pd.DataFrame:
    """Entity rows: random, exactly on a feature timestamp, exactly on a TTL edge, one second past it."""
    users = tables["user_stats"]
    merchants = tables["merchant_stats"]
    rows = []
    for _ in range(n):
        kind = rng.choice(["random", "tie", "ttl_edge", "ttl_past"], p=[0.35, 0.3, 0.2, 0.15])
        user = str(rng.choice(USERS + [f"u{i}" for i in range(30, 35)]))
        merchant = int(rng.integers(0, 25))
        t = T0 + pd.Timedelta(seconds=int(rng.integers(0, SPAN_S + 3 * 86_400)))
        if kind != "random":
            on_users = rng.random() < 0.5
            src, ttl = (users, timedelta(days=2)) if on_users else (merchants, timedelta(hours=6))
            row = src.iloc[int(rng.integers(len(src)))]
            if on_users:
                user = row["user_id"]
            else:
                merchant = int(row["merchant_id"])
            t = row["feature_ts"] + {"tie": timedelta(0), "ttl_edge": ttl, "ttl_past": ttl + timedelta(seconds=1)}[
                kind
            ]
        rows.append((user, merchant, t, kind))
    frame = pd.DataFrame(rows, columns=["user_id", "merchant_id", "cutoff_ts", "kind"])
    frame = pd.concat([frame, frame.iloc[:15]])  # exact duplicate entity rows
    frame["label"] = rng.integers(0, 2, len(frame))
    frame["cutoff_ts"] = pd.to_datetime(frame["cutoff_ts"], utc=True).astype("datetime64[ns, UTC]")  # pandas' ns
    frame["scheduled_at"] = frame["cutoff_ts"] + pd.Timedelta(hours=20)  # a second timestamp column, passed through
    frame.index = rng.permutation(len(frame)) * 7 + 1000  # neither sorted nor 0..n-1
    return frame.sample(frac=1.0, random_state=int(rng.integers(1 << 31)))


def brute_force(
    entity_df: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    *,
    inclusive_cutoff: bool = True,
    apply_ttl: bool = True,
    inclusive_ttl_edge: bool = True,
    latest_created_wins: bool = True,
) -> dict[str, list]:
    """For every entity row scan every feature row of every view (plain Python, integer nanoseconds); each
    keyword argument breaks one rule."""
    out: dict[str, list] = {f: [] for v in PIT_VIEWS for f in v.features}
    scans = {}
    for v in PIT_VIEWS:
        t = tables[v.name]
        created = t["created_ts"] if v.created else t["feature_ts"]
        scans[v.name] = list(zip(
            t[v.key].tolist(),
            [ts.value for ts in t["feature_ts"]],
            [ts.value for ts in created],
            t.index.tolist(),
        ))
    entities = zip(
        entity_df["user_id"].tolist(), entity_df["merchant_id"].tolist(),
        [pd.Timestamp(ts).value for ts in entity_df["cutoff_ts"]],
    )
    for user, merchant, t in entities:
        for view in PIT_VIEWS:
            key = user if view.key == "user_id" else merchant
            ttl = int(view.ttl.total_seconds()) * 10**9
            best, best_rank = None, None
            for row_key, ts, created, idx in scans[view.name]:
                if row_key != key:
                    continue
                if not (ts <= t if inclusive_cutoff else ts < t):
                    continue
                if apply_ttl and ttl and not (ts >= t - ttl if inclusive_ttl_edge else ts > t - ttl):
                    continue
                rank = (ts, created if latest_created_wins else -created)
                if best_rank is None or rank > best_rank:
                    best, best_rank = idx, rank
            table = tables[view.name]
            for f in view.features:
                out[f].append(None if best is None else table.at[best, f])
    return out


def is_missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))


def mismatches(actual: pd.DataFrame, expected: dict[str, list]) -> list[tuple]:
    bad = []
    for feature, values in expected.items():
        for i, (a, e) in enumerate(zip(actual[feature].tolist(), values)):
            if is_missing(a) and is_missing(e):
                continue
            if is_missing(a) != is_missing(e):
                bad.append((i, feature, a, e))
            elif isinstance(e, pd.Timestamp) or isinstance(a, pd.Timestamp):
                if pd.Timestamp(a) != pd.Timestamp(e):
                    bad.append((i, feature, a, e))
            elif isinstance(e, str) or isinstance(a, str):
                if a != e:
                    bad.append((i, feature, a, e))
            elif float(a) != float(e):
                bad.append((i, feature, a, e))
    return bad


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_point_in_time_join_matches_brute_force(pit_repo, seed):
    client, features = pit_repo
    rng = np.random.default_rng(seed)
    tables = make_pit_tables(rng)
    write_pit_tables(features, tables)
    entity_df = make_entity_rows(rng, tables)
    if seed % 2:  # naive timestamps are taken as UTC
        entity_df["cutoff_ts"] = entity_df["cutoff_ts"].dt.tz_localize(None)
    original = entity_df.copy()

    actual = client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts")

    # the caller's frame is untouched and comes back in order, same index, same columns, plus the features
    pd.testing.assert_frame_equal(entity_df, original)
    assert list(actual.index) == list(entity_df.index)
    pd.testing.assert_frame_equal(actual[list(entity_df.columns)], entity_df)
    all_features = [f for v in PIT_VIEWS for f in v.features]
    assert list(actual.columns) == [*entity_df.columns, *all_features]
    assert str(actual["u_valid_from"].dtype) == "datetime64[us, UTC]"  # UnixTimestamp comes back as a timestamp
    assert str(actual["u_count"].dtype) == "float64"

    expected = brute_force(entity_df, tables)
    bad = mismatches(actual, expected)
    assert not bad, f"seed {seed}: {len(bad)} mismatches, e.g. {bad[:5]}"
    # the data exercises every rule: features found, and nulls from absent keys / expiry
    assert actual["u_value"].notna().sum() > 50 and actual["m_value"].notna().sum() > 30
    assert actual["m_value"].isna().sum() > 30 and actual["s_value"].isna().sum() > 10

    # negative controls: each wrong rule is detected by the same comparison
    for wrong in (
        {"inclusive_cutoff": False},  # feature valid exactly at the cutoff is included
        {"apply_ttl": False},  # rows older than the TTL are not returned
        {"inclusive_ttl_edge": False},  # ... but a row exactly ttl old is
        {"latest_created_wins": False},  # duplicate feature_ts: the later created_ts wins
    ):
        assert len(mismatches(actual, brute_force(entity_df, tables, **wrong))) > 0, wrong


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duckdb_join_equals_feasts(pit_repo, seed):
    """The platform's DuckDB ASOF join returns exactly Feast's ``get_historical_features`` frame (values, dtypes,
    order, index, NaN placement): a row exactly ``ttl`` old, rows at exactly the entity timestamp, keys in no
    table, duplicate entity rows, duplicate feature timestamps told apart by created, NULL feature values, an
    int and a string key, a view without TTL, unsorted files."""
    client, features = pit_repo
    rng = np.random.default_rng(100 + seed)
    tables = make_pit_tables(rng)
    tables["user_stats"].loc[tables["user_stats"].sample(frac=0.2, random_state=seed).index, "u_valid_from"] = pd.NaT
    write_pit_tables(features, tables)
    entity_df = make_entity_rows(rng, tables)
    if seed == 2:  # whole rows repeated: each distinct (keys, timestamp) many times
        entity_df = pd.concat([entity_df, entity_df.iloc[::3]])

    ours = client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts")
    feasts = client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts", engine="feast")

    pd.testing.assert_frame_equal(ours, feasts, check_exact=True)
    kinds = set(entity_df["kind"])
    assert {"tie", "ttl_edge", "ttl_past"} <= kinds
    assert (ours["u_value"].notna() & ours["u_valid_from"].isna()).any()  # a NULL value of a picked row
    edge = entity_df["kind"].to_numpy() == "ttl_edge"
    assert ours.loc[edge, ["u_value", "m_value"]].notna().any(axis=None)  # exactly ttl old: still served
    # an empty entity frame gives the same empty frame
    pd.testing.assert_frame_equal(
        client.historical_features(entity_df.iloc[:0], "pit_service", timestamp_column="cutoff_ts"),
        client.historical_features(entity_df.iloc[:0], "pit_service", timestamp_column="cutoff_ts", engine="feast"),
    )


def test_duckdb_join_from_file_to_file(pit_repo, tmp_path):
    """``historical_features_file`` (scoring's one query per day) writes the rows of ``historical_features`` at
    one timestamp, in the file's order, which ``conform_features`` brings to the same dtypes."""
    client, features = pit_repo
    rng = np.random.default_rng(7)
    tables = make_pit_tables(rng)
    write_pit_tables(features, tables)
    at = T0 + pd.Timedelta(days=5, minutes=int(tables["merchant_stats"]["feature_ts"].iloc[0].minute))
    entity_df = make_entity_rows(rng, tables)[["user_id", "merchant_id", "label"]].reset_index(drop=True)
    spine = tmp_path / "spine.parquet"
    pq.write_table(pa.Table.from_pandas(entity_df, preserve_index=False), spine, row_group_size=50)

    out = tmp_path / "joined.parquet"
    assert client.historical_features_file(spine, "pit_service", at.to_pydatetime(), out) == len(entity_df)
    from_file = client.conform_features(pq.read_table(out).to_pandas(), "pit_service")
    expected = client.historical_features(entity_df.assign(event_timestamp=at), "pit_service",
                                          engine="feast").drop(columns="event_timestamp")
    pd.testing.assert_frame_equal(from_file, expected, check_exact=True)
    pq.write_table(pa.Table.from_pandas(entity_df.drop(columns="user_id"), preserve_index=False), spine)
    with pytest.raises(EntityFrameError, match="user_id"):
        client.historical_features_file(spine, "pit_service", at.to_pydatetime(), out)


def test_a_join_runs_capped_in_a_spill_folder_of_its_own(pit_repo, monkeypatch):
    """Every point-in-time join (a training-set part's, a scoring day's) runs in a DuckDB capped at
    ``pit_join.MEMORY_LIMIT``, spilling to a temporary folder of its own that goes with the join (not DuckDB's
    default ``.tmp`` in the working folder): a cap too small for the join fails it with DuckDB's out-of-memory
    error, so the joins run under it."""
    import duckdb

    from batch_platform.lib import pit_join

    with pit_join.connect() as con:
        (limit, spill), = con.sql("SELECT current_setting('memory_limit'), "
                                  "current_setting('temp_directory')").fetchall()
        assert limit == "488.2 MiB"  # 512MB
        assert Path(spill).is_dir() and Path(spill).name.startswith("batch-platform-join-")
        assert Path(spill).parent == Path(tempfile.gettempdir())
    assert not Path(spill).exists()

    client, features = pit_repo
    rng = np.random.default_rng(3)
    tables = make_pit_tables(rng)
    write_pit_tables(features, tables)
    entity_df = make_entity_rows(rng, tables)
    expected = client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts")
    monkeypatch.setattr(pit_join, "MEMORY_LIMIT", "1MB")
    with pytest.raises(duckdb.OutOfMemoryException):
        client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts")
    monkeypatch.setattr(pit_join, "MEMORY_LIMIT", "64MB")
    pd.testing.assert_frame_equal(client.historical_features(entity_df, "pit_service", timestamp_column="cutoff_ts"),
                                  expected, check_exact=True)


def test_a_join_over_its_cap_spills_and_returns_the_same_rows(tmp_path, monkeypatch):
    """A join that needs more than its cap (1M feature rows of 50,000 keys with a created-timestamp tie-break, 300,000
    entity rows, capped at 64MB) spills to its folder and returns exactly the rows it returns uncapped."""
    import threading
    import time

    from batch_platform.lib import pit_join

    rng = np.random.default_rng(0)
    n_feat, n_ent, keys = 1_000_000, 300_000, 50_000
    t0 = np.datetime64("2013-01-01T00:00:00", "us")

    def stamps(n):
        return pa.array(t0 + rng.integers(0, 86_400 * 60, n).astype("timedelta64[s]"), pa.timestamp("us", "UTC"))

    path = tmp_path / "features.parquet"
    pq.write_table(pa.table({"k": rng.integers(0, keys, n_feat), "ts": stamps(n_feat), "created": stamps(n_feat),
                             "v": rng.random(n_feat), "s": pa.array([f"x{i % 977}" for i in range(n_feat)])}), path)
    entities = pa.table({"k": rng.integers(0, keys, n_ent), pit_join.ROW: np.arange(n_ent),
                         pit_join.TS: stamps(n_ent)})
    view = pit_join.ViewJoin("v", str(path), "ts", "created", (("k", "k"),),
                             (("v", "v", "DOUBLE"), ("s", "s", "STRING")), timedelta(days=7))
    monkeypatch.setattr(pit_join, "MEMORY_LIMIT", "16GB")
    uncapped = pit_join.join_table([view], entities)

    spills = tmp_path / "tmp"
    spills.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spills))  # the join's own folder is made here
    monkeypatch.setattr(pit_join, "MEMORY_LIMIT", "64MB")
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(spills.glob("batch-platform-join-*/*"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        capped = pit_join.join_table([view], entities)
    finally:
        done.set()
        watcher.join()
    assert seen, "the join did not spill: raise the rows or lower the cap"
    assert capped.equals(uncapped)
    assert 0 < uncapped.column("v").null_count < n_ent  # features found, some expired or absent
    assert not list(spills.iterdir())  # the folder went with the join


# =================================================================================================================
# 2. The real repo: apply in-process and via the CLI
# =================================================================================================================
def test_real_repo_applies_idempotently(features_dir, tmp_path, monkeypatch):
    client = FeatureStoreClient()
    with pytest.raises(FeatureStoreNotApplied):
        client.historical_features(pd.DataFrame({"tailnum": ["N1"], "event_timestamp": [T0]}), "flight_delay_v1")

    summary = client.apply()  # no parquet yet: Feast only warns
    # 4 feature entities + flight_id, the key of the prediction views (one per shipped spec, push-fed)
    assert (summary.entities, summary.feature_views, summary.feature_services) == (5, 5, 2)
    assert summary.feature_view_names == sorted(REAL_VIEWS)
    assert summary.prediction_view_names == ["flight_cancellation_predictions", "flight_delay_predictions"]
    assert summary.feature_service_names == ["flight_cancellation_v1", "flight_delay_v1"]
    assert "Created feature view plane_daily_features" in summary.diff
    with sqlite3.connect(summary.online_store_path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {f"wide_batch_platform_{v}" for v in REAL_VIEWS} <= tables

    again = FeatureStoreClient().apply()
    assert again.diff == "" and again.feature_views == 5 and again.fingerprint == summary.fingerprint

    store = client.store
    for name, (key, ttl) in REAL_VIEWS.items():
        view = store.get_feature_view(name)
        assert view.join_keys == [key] and view.ttl == ttl and view.online
        assert view.batch_source.path == str(features_dir.resolve() / name)  # the dataset folder dbt writes
        assert view.batch_source.timestamp_field == "feature_ts"
    delay = store.get_feature_service("flight_delay_v1")
    cancel = store.get_feature_service("flight_cancellation_v1")
    all_features = {f.name for v in store.list_feature_views() if not is_prediction_view(v) for f in v.features}
    assert {f.name for p in delay.feature_view_projections for f in p.features} == all_features
    assert {f.name for p in cancel.feature_view_projections for f in p.features} == all_features - {
        "route_mean_arr_delay_28d"
    }
    assert client.applied_fingerprint() == client.definitions_fingerprint() == summary.fingerprint

    # named errors instead of Feast tracebacks
    entity = pd.DataFrame({"tailnum": ["N1"], "route": ["EWR-ORD"], "carrier": ["UA"], "origin": ["EWR"],
                           "event_timestamp": [T0]})
    with pytest.raises(MissingFeatureTable, match="plane_daily_features"):
        client.historical_features(entity, "flight_delay_v1")
    with pytest.raises(UnknownFeatureObject, match="flight_delay_v9"):
        client.historical_features(entity, "flight_delay_v9")
    frames = write_real_tables(features_dir, store, np.random.default_rng(0))
    with pytest.raises(EntityFrameError, match="origin"):
        client.historical_features(entity.drop(columns="origin"), "flight_delay_v1")
    # a dbt table that drifted from the declared schema, or was written with pandas' nanosecond timestamps
    carrier = features_dir / "carrier_daily_features" / "data.parquet"
    pq.write_table(pq.read_table(carrier).drop(["carrier_flights_7d"]), carrier)
    with pytest.raises(FeatureTableSchemaError, match="carrier_flights_7d"):
        client.historical_features(entity, "flight_delay_v1")
    frames["carrier_daily_features"].to_parquet(carrier)  # pandas default: timestamp[ns, tz=UTC]
    with pytest.raises(FeatureTableSchemaError, match="nanosecond"):
        client.materialize(WEEK_START, WEEK_START + timedelta(days=1))

    # readers wait for a writer holding the registry lock (Feast rewrites the registry file in place)
    monkeypatch.setattr(feature_store, "LOCK_TIMEOUT_S", 0.3)
    with open(f"{summary.registry_path}.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(FeatureStoreBusy):
            client.online_features("flight_delay_v1", [{"tailnum": "N1", "route": "EWR-ORD", "carrier": "UA",
                                                        "origin": "EWR"}])
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert client.online_features("plane_attributes:plane_seats", [{"tailnum": "N1"}]) == [
        {"tailnum": "N1", "plane_seats": None}
    ]

    # apply mirrors the repo: a service removed from the code is removed from the registry
    repo = tmp_path / "repo"
    shutil.copytree(settings.FEATURE_REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    declared = repo / "features.yaml"
    doc = yaml.safe_load(declared.read_text())
    doc["feature_services"] = [s for s in doc["feature_services"] if s["name"] != "flight_cancellation_v1"]
    declared.write_text(yaml.safe_dump(doc, sort_keys=False))
    fewer = FeatureStoreClient(repo).apply()
    assert fewer.feature_service_names == ["flight_delay_v1"] and fewer.feature_views == 5


def test_a_copied_data_folder_never_touches_the_original(tmp_path, monkeypatch):
    """Feast's own SQLite store records the online tables' absolute paths in its registry: an apply in a copy of a
    data folder used to drop the original's online tables (its `predict` then failed with 'no such table'). The
    wide store records no path at all, so a copy's apply creates the copy's tables and leaves the original's
    content as it was."""
    original = tmp_path / "a"
    point_env(monkeypatch, original)
    client = FeatureStoreClient()
    client.apply()
    store_a = original / "feast" / "online_store.db"

    def content(path: Path) -> tuple[set[str], list[str]]:
        with contextlib.closing(sqlite3.connect(path)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            return tables, [line for line in con.iterdump() if "wide_views" not in line]

    tables_a, dump_a = content(store_a)
    assert {f"wide_batch_platform_{v}" for v in REAL_VIEWS} <= tables_a
    proto = client.store.registry._get_registry_proto(project=client.store.project, allow_cache=False)
    assert not any(o.HasField("sqlite_table") for o in proto.infra.infra_objects)  # no path recorded

    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    point_env(monkeypatch, copy)
    summary = FeatureStoreClient().apply()
    assert content(store_a) == (tables_a, dump_a)  # the original, unchanged
    assert "another instance" not in summary.diff
    assert content(copy / "feast" / "online_store.db")[0] == tables_a


def test_feast_cli_apply_in_repo_folder(tmp_path, monkeypatch):
    point_env(monkeypatch, tmp_path)
    before = sorted(p.name for p in settings.FEATURE_REPO_DIR.rglob("*"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "feast"), "apply"],
        cwd=settings.FEATURE_REPO_DIR,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Feast prints its registry diff only for its own SQLite store; for others (ours, Redis) the infrastructure
    assert "Deploying infrastructure for flight_delay_predictions" in result.stdout
    assert (tmp_path / "feast" / "registry.db").exists()
    assert sorted(p.name for p in settings.FEATURE_REPO_DIR.rglob("*")) == before  # nothing written into the repo

    # the CLI and the in-process apply produce the same registry: applying again in-process changes nothing
    summary = FeatureStoreClient().apply()
    assert summary.diff == "" and (summary.feature_views, summary.feature_services) == (5, 2)


# =================================================================================================================
# 3. Fingerprint
# =================================================================================================================
def test_definitions_fingerprint_stable_and_sensitive(tmp_path, monkeypatch):
    point_env(monkeypatch, tmp_path / "a")
    first = FeatureStoreClient().definitions_fingerprint()
    assert len(first) == 64 and FeatureStoreClient().definitions_fingerprint() == first
    point_env(monkeypatch, tmp_path / "b")  # other data location: same definitions
    assert FeatureStoreClient().definitions_fingerprint() == first

    repo = tmp_path / "repo"
    shutil.copytree(settings.FEATURE_REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    # files .feastignore excludes are neither imported nor counted
    (repo / "scratch").mkdir()
    (repo / "scratch" / "extra.py").write_text("raise RuntimeError('ignored files must not be imported')\n")
    (repo / "test_views.py").write_text("raise RuntimeError('ignored files must not be imported')\n")
    assert FeatureStoreClient(repo).definitions_fingerprint() == first

    declared = repo / "features.yaml"
    source = declared.read_text()
    doc = yaml.safe_load(source)
    (weather,) = [v for v in doc["feature_views"] if v["name"] == "origin_weather_features"]
    assert weather["ttl_days"] == 2
    weather["ttl_days"] = 3
    declared.write_text(yaml.safe_dump(doc, sort_keys=False))
    changed = FeatureStoreClient(repo).definitions_fingerprint()
    assert changed != first
    weather["ttl_days"], weather["description"] = 2, "Reworded."
    declared.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert FeatureStoreClient(repo).definitions_fingerprint() == first  # descriptions are not definitions
    # the flight definitions as they were declared in Python until they moved to features.yaml: equal
    assert first == PYTHON_DECLARED_FINGERPRINT


PYTHON_DECLARED_FINGERPRINT = "829118e0d84c267b59f632c84594904906525501714ae6d7c8bf7aa1bdd9661d"
"""The feature-definitions fingerprint of feature_repo/*.py before the definitions moved to features.yaml (every
model trained since records it): the YAML declares the same entities, views, sources and services."""


def test_a_repository_of_yaml_alone(tmp_path, monkeypatch):
    """No Python in the repository: features.yaml and feature_store.yaml give the same definitions (the platform
    adds each spec's prediction view); a malformed declaration fails by name, pointing at the file and field."""
    from batch_platform.lib.feast_declarations import FeastDeclarationError

    point_env(monkeypatch, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("features.yaml", "feature_store.yaml"):
        shutil.copy(settings.FEATURE_REPO_DIR / name, repo / name)
    client = FeatureStoreClient(repo)
    assert client.definitions_fingerprint() == PYTHON_DECLARED_FINGERPRINT
    summary = client.apply()
    assert (summary.entities, summary.feature_views, summary.feature_services) == (5, 5, 2)
    assert sorted(summary.prediction_view_names) == ["flight_cancellation_predictions", "flight_delay_predictions"]
    doc = yaml.safe_load((repo / "features.yaml").read_text())
    for change, field in (
        (lambda d: d["feature_views"][0]["features"].update(plane_seats="Decimal"), "feature_views[0].features"),
        (lambda d: d["feature_views"][0].update(entity="aircraft"), "feature_views[0].entity"),
        (lambda d: d["feature_services"][1]["views"][1].update(exclude=["no_such_feature"]),
         "feature_services[1].views[1]"),
        (lambda d: d["feature_views"][1].update(ttl="3d"), "feature_views[1].ttl"),
    ):
        broken = yaml.safe_load(yaml.safe_dump(doc))
        change(broken)
        (repo / "features.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
        with pytest.raises(FeastDeclarationError) as raised:
            client.definitions_fingerprint()
        assert raised.value.field.startswith(field) and "features.yaml" in str(raised.value), raised.value


# =================================================================================================================
# 4. Online store == offline join at the materialization end
# =================================================================================================================
KEYS = {
    "tailnum": [f"N{i:03d}" for i in range(40)],
    "route": [f"EWR-{c}" for c in ("ORD", "ATL", "LAX", "SFO", "BOS", "MIA", "DEN", "SEA", "IAH", "DFW")],
    "carrier": ["UA", "AA", "DL", "B6", "EV"],
    "origin": ["EWR", "JFK", "LGA"],
}
WEEK_START = datetime(2013, 1, 1, tzinfo=UTC)


def write_real_tables(features: Path, store, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """A week of synthetic rows in the documented schemas (columns and types from the applied views).

    Daily tables: a row per key and day valid from 11:00 UTC (06:00 New York), each missing with 15%; the last
    quarter of the keys stop after day 2, so they are expired (TTL 3 days) at the end of the week. Weather: hourly
    per origin, LGA stops 8 hours before the end (TTL 6 hours). Plane attributes: once, at 2000-01-01.
    """
    frames = {}
    for name, (key, _) in REAL_VIEWS.items():
        view = store.get_feature_view(name)
        keys = KEYS[key]
        rows = []
        for i, k in enumerate(keys):
            if name == "plane_attributes":
                stamps = [] if i % 10 == 9 else [pd.Timestamp("2000-01-01", tz="UTC")]
            elif name == "origin_weather_features":
                last = 7 * 24 - (8 if k == "LGA" else 0)
                stamps = [pd.Timestamp(WEEK_START) + pd.Timedelta(hours=h) for h in range(last + 1)
                          if rng.random() < 0.9]
            else:
                days = 2 if i >= len(keys) * 3 // 4 else 7
                stamps = [pd.Timestamp(WEEK_START) + pd.Timedelta(days=d, hours=11) for d in range(days)
                          if rng.random() < 0.85]
            rows.extend((k, ts) for ts in stamps)
        frame = pd.DataFrame(rows, columns=[key, "feature_ts"])
        types = {key: pa.string(), "feature_ts": pa.timestamp("us", tz="UTC")}
        n = len(frame)
        for f in view.features:
            kind = f.dtype.to_value_type().name
            types[f.name] = PA_TYPES[kind]
            if kind == "UNIX_TIMESTAMP":
                frame[f.name] = frame["feature_ts"]
            elif kind == "INT64":
                frame[f.name] = pd.array(rng.integers(0, 500, n), dtype="Int64")
                frame.loc[rng.random(n) < 0.05, f.name] = pd.NA
            elif kind == "DOUBLE":
                frame[f.name] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
            else:
                frame[f.name] = [f"{f.name}-{j}" for j in rng.integers(0, 20, n)]
        if name == "plane_daily_features":
            frame["as_of_date"] = (frame["feature_ts"] - pd.Timedelta(days=1)).dt.date
            types["as_of_date"] = pa.date32()
        if name == "origin_weather_features":
            frame["obs_ts"] = frame["feature_ts"] - pd.Timedelta(hours=1)
            types["obs_ts"] = pa.timestamp("us", tz="UTC")
        (features / name).mkdir(parents=True, exist_ok=True)  # a dataset folder, as dbt writes them
        write_parquet(features / name / "data.parquet", frame, types)
        frames[name] = frame
    return frames


def keys_in_window(frame: pd.DataFrame, key: str, start: datetime, end: datetime) -> int:
    ts = frame["feature_ts"]
    return frame.loc[(ts >= pd.Timestamp(start)) & (ts <= pd.Timestamp(end)), key].nunique()


def same(a, b) -> bool:
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if isinstance(a, (datetime, pd.Timestamp)) or isinstance(b, (datetime, pd.Timestamp)):
        return pd.Timestamp(a) == pd.Timestamp(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)


def test_online_equals_offline_at_materialization_end(features_dir):
    client = FeatureStoreClient()
    client.apply()
    frames = write_real_tables(features_dir, client.store, np.random.default_rng(42))
    mid = WEEK_START + timedelta(days=3)
    end = WEEK_START + timedelta(days=7)

    # first run: nothing materialized yet -> each view from max(oldest row, mid - ttl); no TTL: the oldest row
    first = client.materialize_incremental(mid, batch_days=2)
    assert first.starts["plane_attributes"] == datetime(2000, 1, 1, tzinfo=UTC)
    assert first.starts["plane_daily_features"] == WEEK_START + timedelta(hours=11)
    assert first.starts["origin_weather_features"] == mid - timedelta(days=2)
    assert [b.rows for b in first.batches if b.view == "plane_attributes"] == [36]
    # then explicit windows of 2 days: [mid, mid+2], [mid+2, end]
    second = client.materialize(mid, end, batch_days=2)
    daily = [b for b in second.batches if b.view == "plane_daily_features"]
    assert [(b.start, b.end) for b in daily] == [(mid, mid + timedelta(days=2)), (mid + timedelta(days=2), end)]
    for b in first.batches + second.batches:
        key = REAL_VIEWS[b.view][0]
        assert b.rows == keys_in_window(frames[b.view], key, b.start, b.end) > 0, b
    views = client.store.list_feature_views()
    assert all(v.most_recent_end_time == end for v in views if not is_prediction_view(v))
    assert all(v.most_recent_end_time is None for v in views if is_prediction_view(v))  # push-fed only
    with pytest.raises(MaterializationWouldRewind):
        client.materialize(WEEK_START, mid)
    assert client.materialize_incremental(end).batches == []  # up to date

    rows = [
        {"tailnum": t, "route": KEYS["route"][i % 10], "carrier": KEYS["carrier"][i % 5], "origin": KEYS["origin"][i % 3]}
        for i, t in enumerate(KEYS["tailnum"] + ["N999"])  # N999: in no table
    ]
    offline = client.historical_features(pd.DataFrame(rows).assign(event_timestamp=end), "flight_delay_v1")
    # the real repo's views (five files, TTLs of 3 and 2 days and none): the DuckDB join is Feast's
    pd.testing.assert_frame_equal(offline, client.historical_features(
        pd.DataFrame(rows).assign(event_timestamp=end), "flight_delay_v1", engine="feast"), check_exact=True)
    features = [c for c in offline.columns if c not in {"tailnum", "route", "carrier", "origin", "event_timestamp"}]
    assert len(features) == 43

    online = client.online_features("flight_delay_v1", rows, as_of=end)
    bad = [(i, f, online[i][f], offline[f].iloc[i]) for i in range(len(rows)) for f in features
           if not same(online[i][f], offline[f].iloc[i])]
    assert not bad, f"{len(bad)} online/offline differences, e.g. {bad[:5]}"
    assert offline["plane_flights_7d"].notna().sum() >= 20 and offline["wx_temp"].notna().sum() > 0

    # Feast's online read itself ignores TTLs: without as_of the expired keys still show their last values ...
    raw = client.online_features("flight_delay_v1", rows)
    stale = [(i, f) for i in range(len(rows)) for f in features if not same(raw[i][f], offline[f].iloc[i])]
    assert stale and all(is_missing(offline[f].iloc[i]) for i, f in stale)
    assert {f for _, f in stale} & {"plane_flights_7d", "wx_temp"}  # expired daily rows and LGA's weather
    # ... and equal the offline join wherever that found a value (keys within the TTL)
    assert all(same(raw[i][f], offline[f].iloc[i]) for i in range(len(rows)) for f in features
               if not is_missing(offline[f].iloc[i]))

    # the cancellation service serves the same values minus route_mean_arr_delay_28d
    cancel = client.online_features("flight_cancellation_v1", rows[:3], as_of=end)
    assert "route_mean_arr_delay_28d" not in cancel[0] and "route_cancel_rate_28d" in cancel[0]


def test_every_feast_import_of_the_platform_goes_through_import_feast():
    """A function of the platform that imports from ``feast`` calls ``import_feast()`` before: the first one to run
    in a process decides whether Feast is instrumented (5 s of the feature build's apply once went to that). The
    one exception is the online store plugin, which Feast itself imports."""
    import ast

    from batch_platform import settings

    late = []
    for path in sorted((settings.REPO_ROOT / "batch_platform").rglob("*.py")):
        if path.name in ("feast_import.py", "feast_wide_store.py"):
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            called = False
            for node in fn.body:
                if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "import_feast" for n in ast.walk(node)):
                    called = True
                imports = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                if any((getattr(n, "module", None) or "").split(".")[0] == "feast"
                       or any(a.name.split(".")[0] == "feast" for a in n.names if isinstance(n, ast.Import))
                       for n in imports) and not called:
                    late.append(f"{path.relative_to(settings.REPO_ROOT)}:{node.lineno} {fn.name}")
                    break
    assert late == []


def test_feast_is_imported_without_typeguards_instrumentation():
    """The store's entry points import Feast through ``import_feast``: its classes are not recompiled with
    typeguard's checks (4 s of every process that opens the store). typeguard serves Feast alone here, so nothing
    else loses a check; answers are unchanged (``test_feast_cli_apply_in_repo_folder`` compares the in-process
    apply with the instrumented `feast apply`, the joins are checked against a brute force)."""
    import importlib.metadata

    def needs_typeguard(requirement: str) -> bool:  # at run time (an extra's requirement is not installed for it)
        name, _, marker = requirement.partition(";")
        return name.replace(" ", "").lower().startswith("typeguard") and "extra" not in marker

    users = sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
                   if any(needs_typeguard(r) for r in d.requires or []))
    assert users == ["feast"]
    probe = ("from batch_platform import settings\nfrom batch_platform.lib import feature_store\n"
             "import sys; assert 'feast' not in sys.modules\n"
             "feature_store.repo_config(settings.FEATURE_REPO_DIR)\n"
             "import feast.entity\n"
             "print(sorted(n for n in feast.entity.Entity.__init__.__code__.co_names if 'check_' in n))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    plain = subprocess.run([sys.executable, "-c", probe.replace("feature_store.repo_config", "import feast; ")
                            .replace("(settings.FEATURE_REPO_DIR)", "")], capture_output=True, text=True)
    assert "check_argument_types_internal" in plain.stdout  # the probe sees instrumentation where there is some
