"""The wide-row online store and the serving endpoint, with real Feast, SQLite, uvicorn and HTTP on loopback.

- Feast's own SQLite online store and ours, both materialized by Feast, read back identical through Feast's
  ``get_online_features``; the platform's bulk materialization (no protobuf round trip) reads back identical too;
- a day's predictions written in many frames become visible to a reader all at once (one transaction); an older
  event never overwrites a newer one;
- the direct reader (no Feast) answers exactly as Feast's API does, for known, unknown and expired keys;
- ``batch-platform serve`` answers over HTTP what ``batch-platform predict --json`` prints, for known, unknown and
  expired keys, in single and batch requests; readiness follows the store.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_platform import settings
from batch_platform.lib import serving, wide_store
from batch_platform.lib.feature_store import FeatureStoreClient, _materialize_wide, import_feast
from tests.prediction_rows import prediction_rows
from tests.test_feature_store import point_env

UTC = dt.UTC
T0 = dt.datetime(2021, 3, 1, tzinfo=UTC)
USERS = [f"u{i:03d}" for i in range(200)]
SPEC = "flight_delay"


# =================================================================================================================
# Feast's SQLite store vs the wide store, through Feast's API
# =================================================================================================================
def _objects(path: Path):
    import_feast()
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="user_stats", entities=[user], ttl=dt.timedelta(days=2),
        schema=[Field(name="user_id", dtype=String), Field(name="amount", dtype=Float64),
                Field(name="count", dtype=Int64), Field(name="label", dtype=String),
                Field(name="seen_at", dtype=UnixTimestamp), Field(name="active", dtype=Bool)],
        source=FileSource(name="user_stats", path=str(path), file_format=ParquetFormat(),
                          timestamp_field="feature_ts", created_timestamp_column="created_ts"),
    )
    return user, view


def _write_user_stats(path: Path, rng: np.random.Generator) -> None:
    """Several rows per user over 5 days, ties on the feature timestamp split by the created timestamp, NULLs in
    every column, some users only outside the materialized window."""
    n = 1500
    users = rng.choice(USERS[:180], n)
    ts = [T0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 5 * 24, n)]
    ts = [t - dt.timedelta(days=3) if u >= "u160" else t for u, t in zip(users, ts)]  # mostly before the window
    ts[1] = ts[0]  # a tie on the feature timestamp ...
    users[1] = users[0]
    created = [t + dt.timedelta(minutes=int(m)) for t, m in zip(ts, rng.integers(0, 60, n))]
    amount = rng.normal(size=n)
    amount[rng.random(n) < 0.1] = np.nan
    table = pa.table({
        "user_id": pa.array(users.tolist(), pa.string()),
        "feature_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "created_ts": pa.array(created, pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount, pa.float64(), from_pandas=True),
        "count": pa.array([None if i % 11 == 0 else int(v) for i, v in enumerate(rng.integers(0, 1000, n))],
                          pa.int64()),
        "label": pa.array([None if i % 13 == 0 else f"l{v}" for i, v in enumerate(rng.integers(0, 5, n))],
                          pa.string()),
        "seen_at": pa.array([None if i % 17 == 0 else t - dt.timedelta(seconds=int(s), microseconds=123)
                             for i, (t, s) in enumerate(zip(ts, rng.integers(0, 10**6, n)))],
                            pa.timestamp("us", tz="UTC")),
        "active": pa.array([None if i % 19 == 0 else bool(v) for i, v in enumerate(rng.integers(0, 2, n))],
                           pa.bool_()),
    })
    pq.write_table(table, path)


def _store(base: Path, online: dict):
    import_feast()
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    base.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(project="t", provider="local", entity_key_serialization_version=3,
                        registry={"registry_type": "file", "path": str(base / "registry.db")},
                        offline_store={"type": "duckdb"}, online_store=online)
    config.repo_path = base
    return FeatureStore(repo_path=str(base), config=config)


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_wide_rows_read_back_through_feast_as_feasts_own_sqlite_store(tmp_path):
    data = tmp_path / "user_stats.parquet"
    _write_user_stats(data, np.random.default_rng(7))
    start, end = T0 + dt.timedelta(hours=6), T0 + dt.timedelta(days=4)
    stores = {
        "feast_sqlite": _store(tmp_path / "a", {"type": "sqlite", "path": str(tmp_path / "a" / "online.db")}),
        "wide_by_feast": _store(tmp_path / "b", {"type": wide_store.FEAST_TYPE, "path": str(tmp_path / "b" / "o.db")}),
        "wide_in_bulk": _store(tmp_path / "c", {"type": wide_store.FEAST_TYPE, "path": str(tmp_path / "c" / "o.db")}),
    }
    refs = [f"user_stats:{f}" for f in ("amount", "count", "label", "seen_at", "active")]
    rows = [{"user_id": u} for u in USERS]  # u180.. have no rows at all
    answers = {}
    for name, store in stores.items():
        user, view = _objects(data)
        store.apply([user, view])
        if name == "wide_in_bulk":
            online = wide_store.connect(tmp_path / "c" / "o.db")
            written = _materialize_wide(online, "t", store.get_feature_view("user_stats"), start, end)
            online.close()
            frame = pq.read_table(data).to_pandas()
            in_window = frame[(frame.feature_ts >= start) & (frame.feature_ts <= end)]
            assert written == in_window.user_id.nunique() > 100
        else:
            store.materialize(start, end, feature_views=["user_stats"])
        answers[name] = store.get_online_features(features=refs, entity_rows=rows).to_dict(
            include_event_timestamps=True)
    expected = answers["feast_sqlite"]
    assert sum(v is not None for v in expected["amount"]) > 100 and None in expected["label"]
    assert any(v is True for v in expected["active"]) and any(v is False for v in expected["active"])
    for name in ("wide_by_feast", "wide_in_bulk"):
        got = answers[name]
        assert got.keys() == expected.keys()
        bad = [(k, i, expected[k][i], got[k][i]) for k in expected for i in range(len(rows))
               if not _same(expected[k][i], got[k][i])]
        assert not bad, f"{name}: {len(bad)} differences from Feast's SQLite store, e.g. {bad[:5]}"
    # one row per key in the wide table, against one per key and feature in Feast's
    with wide_store.connect(tmp_path / "b" / "o.db", read_only=True) as con:
        (wide_rows,) = con.execute('SELECT count(*) FROM "wide_t_user_stats"').fetchone()
    import sqlite3

    with sqlite3.connect(tmp_path / "a" / "online.db") as con:
        (narrow_rows,) = con.execute('SELECT count(*) FROM "t_user_stats"').fetchone()
    assert narrow_rows == 5 * wide_rows


def test_an_older_event_never_overwrites_a_newer_one(tmp_path):
    con = wide_store.connect(tmp_path / "o.db")
    layout = wide_store.ViewLayout("p", "v", {"x": "DOUBLE"}, ("k",), None)
    wide_store.apply_view(con, layout)
    newer, older = wide_store.to_epoch_us(T0 + dt.timedelta(hours=1)), wide_store.to_epoch_us(T0)
    with wide_store.transaction(con):
        wide_store.write_rows(con, layout, [("a", newer, None, 2.0), ("b", older, None, 1.0)])
    with wide_store.transaction(con):
        wide_store.write_rows(con, layout, [("a", older, None, -1.0), ("b", newer, None, 3.0)])
    reader = wide_store.Reader(con, layout)
    assert reader.get("a").values == {"x": 2.0} and reader.get("b").values == {"x": 3.0}
    assert reader.get("c") is None
    with pytest.raises(wide_store.UnsupportedFeatureType):
        wide_store.apply_view(con, wide_store.ViewLayout("p", "w", {"xs": "DOUBLE_LIST"}, ("k",), None))


# =================================================================================================================
# Predictions: one transaction per day; the direct reader answers as Feast's API does
# =================================================================================================================
def _prediction_rows(keys: list[str], scored_at: pd.Timestamp, version: int, seed: int) -> pd.DataFrame:
    return prediction_rows(keys, scored_at, version=version, seed=seed)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The real repo applied in tmp_path, the shipped specs; yields (client, spec, reader)."""
    from batch_platform.lib.specs import SPECS_DIR_VAR, load_specs

    point_env(monkeypatch, tmp_path)
    monkeypatch.delenv(SPECS_DIR_VAR, raising=False)
    monkeypatch.delenv(settings.REDIS_VAR, raising=False)
    client = FeatureStoreClient()
    client.apply()
    specs = load_specs()
    reader = serving.PredictionReader(specs)
    assert reader.direct
    yield client, specs[SPEC], reader
    reader.close()


def test_a_days_predictions_appear_all_at_once_and_read_as_feast_reads_them(served):
    client, spec, reader = served
    view = serving.view_name(spec)
    keys = [f"2013-01-08_UA_{i:04d}_EWR" for i in range(3000)]
    scored = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    stale = scored - pd.Timedelta(days=3)  # older than the view's TTL: expired
    client.write_online(view, [serving.push_frame(spec, _prediction_rows(keys[-10:], stale, 1, 0))])

    seen_during = []

    def frames():
        for i in range(0, 2990, 500):
            yield serving.push_frame(spec, _prediction_rows(keys[i:min(i + 500, 2990)], scored, 2, i))
            seen_during.append(sum(a.found for a in reader.lookup_many(SPEC, keys[:2990])))

    assert client.write_online(view, frames()) == 2990
    assert seen_during == [0] * 6  # a reader saw none of the day while it was written ...
    answers = reader.lookup_many(SPEC, keys + ["2013-01-08_XX_0000_JFK"])
    assert sum(a.found for a in answers) == 2990  # ... then all of it
    assert [a.status for a in answers[-11:]] == [serving.EXPIRED] * 10 + [serving.NOT_FOUND]

    # the direct read equals Feast's get_online_features path, answer for answer
    now = dt.datetime.now(UTC)
    for key in keys[:40:3] + keys[-3:] + ["2013-01-08_XX_0000_JFK"]:
        direct = reader.lookup(SPEC, key, now=now).to_dict()
        through_feast = serving.lookup(client, spec, key, now=now).to_dict()
        assert direct == through_feast, key
    first = reader.lookup(SPEC, keys[0], now=now)
    assert first.found and first.decision is None and first.fallback_reason.startswith("missing_features")
    assert first.model_version == 2 and first.scored_at == scored.to_pydatetime()
    with pytest.raises(serving.UnknownSpec):
        reader.lookup("no_such_spec", keys[0])


# =================================================================================================================
# The HTTP endpoint, as a user runs it
# =================================================================================================================
def _get(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _without_age(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "age_seconds"}


@pytest.mark.timeout(300)
def test_serve_answers_over_http_what_predict_prints(served, tmp_path):
    from tests.test_daemon import free_port

    client, spec, _ = served
    port = free_port()
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "batch-platform"), "serve", "--port", str(port)], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = _get(f"{base}/healthz")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.2)
        assert (status, health) == (200, {"status": "ok"})
        # the predictions views exist (applied), so the store is ready even before a day is pushed
        assert _get(f"{base}/readyz")[0] == 200

        view = serving.view_name(spec)
        now = pd.Timestamp.now(tz="UTC").floor("s")
        keys = [f"2013-01-08_UA_{i:04d}_EWR" for i in range(20)]
        client.write_online(view, [serving.push_frame(spec, _prediction_rows(keys[:15], now - pd.Timedelta(hours=1),
                                                                             3, 1)),
                                   serving.push_frame(spec, _prediction_rows(keys[15:], now - pd.Timedelta(days=3),
                                                                             2, 2))])
        known, expired, unknown = keys[0], keys[-1], "2013-01-08_XX_0000_JFK"
        codes = {}
        for key in (known, expired, unknown):
            status, answer = _get(f"{base}/predictions/{SPEC}/{key}")
            codes[key] = status
            cli = subprocess.run([str(bin_dir / "batch-platform"), "predict", key, "--model", SPEC, "--json"],
                                 env=dict(os.environ), capture_output=True, text=True, timeout=60)
            (printed,) = json.loads(cli.stdout)
            assert _without_age(answer) == _without_age(printed), key
        assert codes == {known: 200, expired: 410, unknown: 404}

        status, batch = _get(f"{base}/predictions/{SPEC}", {"keys": [unknown, *keys]})
        assert status == 200 and [a["status"] for a in batch["predictions"]] == \
            ["not_found"] + ["found"] * 15 + ["expired"] * 5
        single = _get(f"{base}/predictions/{SPEC}/{keys[3]}")[1]
        assert _without_age(batch["predictions"][4]) == _without_age(single)
        assert _get(f"{base}/predictions/nope/{known}") [0] == 404
        assert _get(f"{base}/predictions/{SPEC}", {"key": known})[0] == 400
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_readiness_waits_for_the_store(tmp_path, monkeypatch):
    """Before anything is applied the endpoint is alive but not ready; it becomes ready without a restart."""
    from batch_platform.lib.specs import SPECS_DIR_VAR, load_specs

    point_env(monkeypatch, tmp_path)
    monkeypatch.delenv(SPECS_DIR_VAR, raising=False)
    monkeypatch.delenv(settings.REDIS_VAR, raising=False)
    reader = serving.PredictionReader(load_specs())
    ok, why = reader.ready()
    assert not ok and "no online store" in why
    assert reader.lookup(SPEC, "k").status == serving.NOT_FOUND
    FeatureStoreClient().apply()
    time.sleep(serving.REFRESH_S + 0.1)
    assert reader.ready()[0]
    reader.close()
