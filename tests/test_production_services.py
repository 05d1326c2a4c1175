"""Production mode against real servers (tests/services.py starts them on loopback and stops them after):
Dagster's storage on PostgreSQL (``dagster_home_postgres/dagster.yaml``) and Feast's online store on Redis
(``BATCH_PLATFORM_REDIS``).

- the two instance configs differ only in their storage;
- an unreachable Redis is a named error naming its address;
- Redis and SQLite hold and serve the same answers: the same feature tables materialized into each and the same
  predictions pushed to each (then re-scored) give identical online reads and lookups;
- the README's cycle (land → ingest → features → train → score → predict) through the CLI with both servers:
  runs in PostgreSQL, the online store in Redis (no SQLite file), the served score equal to the warehouse's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from batch_platform import settings
from tests.conftest import platform_env_vars, write_test_specs
from tests.prediction_rows import prediction_rows
from tests.services import free_port, postgres_server, redis_server
from tests.test_feature_store import KEYS, WEEK_START, is_missing, point_env, same, write_real_tables

REPO = Path(__file__).resolve().parent.parent
POSTGRES_HOME = REPO / "dagster_home_postgres"
FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 1, 24)  # as tests/test_cli.py's demo
NEXT_DAY = LAST + dt.timedelta(days=1)
SPEC = "flight_delay"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


def test_instance_configs_differ_only_in_storage():
    default = yaml.safe_load((settings.DEFAULT_DAGSTER_HOME / "dagster.yaml").read_text())
    production = yaml.safe_load((POSTGRES_HOME / "dagster.yaml").read_text())
    storage = production.pop("storage")
    # the embedded default: Dagster's SQLite storage with the index and run databases kept open
    assert default.pop("storage") == {"custom": {"module": "batch_platform.instance_storage",
                                                 "class": "PooledSqliteStorage",
                                                 "config": {"base_dir": {"env": "DAGSTER_HOME"}}}}
    assert production == default
    assert default["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}
    assert storage == {"postgres": {"postgres_db": {
        field: {"env": f"DAGSTER_PG_{var}"} for field, var in
        (("hostname", "HOST"), ("port", "PORT"), ("username", "USER"), ("password", "PASSWORD"), ("db_name", "DB"))
    }}}


def test_unreachable_redis_is_a_named_error(tmp_path, monkeypatch):
    from batch_platform.lib.feature_store import FeatureStoreClient, OnlineStoreUnreachable

    point_env(monkeypatch, tmp_path)
    port = free_port()  # nothing listens there
    monkeypatch.setenv(settings.REDIS_VAR, f"127.0.0.1:{port},db=3,password=not-shown")
    with pytest.raises(OnlineStoreUnreachable, match=f"Redis online store at 127.0.0.1:{port} \\(db 3") as err:
        FeatureStoreClient().apply()
    assert "not-shown" not in str(err.value)
    assert not (tmp_path / "feast" / "online_store.db").exists()


# =================================================================================================================
# Redis answers as SQLite does
# =================================================================================================================
def _prediction_rows(keys: list[str], scored_at: pd.Timestamp, seed: int, version: int) -> pd.DataFrame:
    """Stored prediction rows (the columns serving.push_frame reads), with a decision missing and fallbacks."""
    return prediction_rows(keys, scored_at, version=version, seed=seed)


def _serve(base: Path, features: Path, monkeypatch, redis_connection: str | None) -> dict:
    """Apply, materialize the same tables, push the same predictions twice (a day re-scored), read everything."""
    from batch_platform.lib import serving
    from batch_platform.lib.feature_store import FeatureStoreClient
    from batch_platform.lib.specs import SPECS_DIR_VAR, load_specs

    with monkeypatch.context() as mp:
        point_env(mp, base)
        mp.setenv(settings.FEATURES_VAR, str(features))  # one set of feature tables for both stores
        mp.delenv(SPECS_DIR_VAR, raising=False)  # the shipped specs: their prediction views
        if redis_connection:
            mp.setenv(settings.REDIS_VAR, redis_connection)
        else:
            mp.delenv(settings.REDIS_VAR, raising=False)
        client = FeatureStoreClient()
        applied = client.apply()
        write_real_tables(features, client.store, np.random.default_rng(42))
        mid, end = WEEK_START + dt.timedelta(days=3), WEEK_START + dt.timedelta(days=7)
        client.materialize_incremental(mid, batch_days=2)
        client.materialize(mid, end, batch_days=2)
        rows = [{"tailnum": t, "route": KEYS["route"][i % 10], "carrier": KEYS["carrier"][i % 5],
                 "origin": KEYS["origin"][i % 3]} for i, t in enumerate(KEYS["tailnum"] + ["N999"])]
        spec = load_specs()[SPEC]
        keys = [f"2013-01-08_UA_{i:04d}_EWR" for i in range(60)]
        first = pd.Timestamp("2013-01-07 23:10:00.123456", tz="UTC")
        client.push(serving.push_source_name(spec), serving.push_frame(
            spec, _prediction_rows(keys, first, 1, 1)))
        rescored = pd.Timestamp("2013-01-07 23:40:00.654321", tz="UTC")  # half the day re-scored by v2
        client.push(serving.push_source_name(spec), serving.push_frame(
            spec, _prediction_rows(keys[::2], rescored, 2, 2)))
        now = (rescored + pd.Timedelta(hours=1)).to_pydatetime()
        late = (first + pd.Timedelta(hours=36, seconds=30)).to_pydatetime()  # v1's rows expired, v2's not
        return {
            "applied": applied,
            "online_as_of": client.online_features("flight_delay_v1", rows, as_of=end),
            "online_raw": client.online_features("flight_delay_v1", rows),
            "weather": client.online_features(["origin_weather_features:wx_temp", "plane_attributes:plane_seats"],
                                              [{"origin": o, "tailnum": "N001"} for o in KEYS["origin"]]),
            "lookups": [serving.lookup(client, spec, k, now=now).to_dict() for k in [*keys, "2013-01-08_XX_0000_JFK"]],
            "late": [serving.lookup(client, spec, k, now=late).to_dict() for k in keys[:6]],
        }


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if is_missing(a) and is_missing(b):
        return []
    if type(a) is not type(b) or not same(a, b):
        return [f"{path}: {a!r} != {b!r}"]
    return []


def test_redis_serves_what_sqlite_serves(tmp_path, monkeypatch, redis):
    features = tmp_path / "features"
    features.mkdir()
    server = dataclasses.replace(redis, db=2)  # the cycle test uses db 1
    server.client().flushdb()
    redis.client().flushdb()
    on_sqlite = _serve(tmp_path / "sqlite", features, monkeypatch, None)
    on_redis = _serve(tmp_path / "redis", features, monkeypatch, server.connection_string)

    assert on_sqlite["applied"].online_store.startswith("sqlite ")
    assert on_redis["applied"].online_store == f"redis 127.0.0.1:{redis.port},db=2,password=***"
    assert (tmp_path / "sqlite" / "feast" / "online_store.db").exists()
    assert not (tmp_path / "redis" / "feast" / "online_store.db").exists()
    client = server.client()
    assert client.dbsize() > 0 and redis.client().dbsize() == 0  # written to the configured db only

    diff = _differences({k: v for k, v in on_sqlite.items() if k != "applied"},
                        {k: v for k, v in on_redis.items() if k != "applied"})
    assert not diff, f"{len(diff)} differences, e.g. {diff[:5]}"

    # the compared answers hold values, not only misses: features, the re-scored and the kept predictions, the
    # expiry, a key never pushed
    as_of = on_sqlite["online_as_of"]
    assert sum(not is_missing(r["plane_flights_7d"]) for r in as_of) >= 20
    assert sum(not is_missing(r["wx_temp"]) for r in on_sqlite["weather"]) == 3
    lookups = on_sqlite["lookups"]
    assert [d["model_version"] for d in lookups[:4]] == [2, 1, 2, 1] and not lookups[-1]["found"]
    assert sum(d["decision"] is None for d in lookups[:-1]) > 0 and sum(bool(d["fallback_reason"]) for d in lookups[:-1]) > 0
    assert [d["found"] for d in on_sqlite["late"]] == [True, False] * 3 and "expired" in on_sqlite["late"][1]["reason"]


# =================================================================================================================
# The cycle, through the CLI, on PostgreSQL and Redis
# =================================================================================================================
def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "batch-platform"
    res = subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, f"batch-platform {' '.join(args)} exited {res.returncode}:\n{res.stdout[-3000:]}" \
                                f"\n{res.stderr[-3000:]}"
    return res


def test_cycle_on_postgres_and_redis(tmp_path, monkeypatch, postgres, redis):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from batch_platform.lib import scoring, warehouse
    from batch_platform.lib.specs import SPECS_DIR_VAR, load_specs

    paths = platform_env_vars(tmp_path)
    write_test_specs(paths[SPECS_DIR_VAR])
    for other in paths[SPECS_DIR_VAR].glob("*.yaml"):  # one model is enough to serve; two would double training
        if other.stem != SPEC:
            other.unlink()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(POSTGRES_HOME / "dagster.yaml", home / "dagster.yaml")
    redis.client().flushdb()
    env = {**{k: str(v) for k, v in paths.items()}, **postgres.env(), "DAGSTER_HOME": str(home),
           settings.REDIS_VAR: redis.connection_string}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    env = dict(os.environ)

    _cli("land", "--start", FIRST.isoformat(), "--end", LAST.isoformat(), env=env)
    ingest = _cli("ingest", "--start", FIRST.isoformat(), "--end", LAST.isoformat(), env=env)
    assert "3 run(s), 0 unchanged" in ingest.stdout  # the reference snapshots, the range of days, the next schedule
    features = _cli("features", env=env)
    assert f"Online store redis 127.0.0.1:{redis.port},db=1,password=*** materialized until" in features.stdout
    _cli("train", env=env)
    score = _cli("score", env=env)
    assert f"Score day {NEXT_DAY.isoformat()}" in score.stdout

    # Dagster recorded every run in PostgreSQL, and nothing in a local SQLite storage
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        runs = instance.get_runs()
        assert runs and all(r.is_success for r in runs)
    con = postgres.connect()
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pipeline_name, status, count(*) FROM runs GROUP BY 1, 2 ORDER BY 1, 2")
            by_job = cur.fetchall()
            cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
            (materializations,) = cur.fetchone()
    finally:
        con.close()
    assert by_job == [("batch_scoring", "SUCCESS", 1), ("build_features", "SUCCESS", 1),
                      ("raw_daily_ingest", "SUCCESS", 2), ("raw_reference_refresh", "SUCCESS", 1),
                      ("train_gate_promote", "SUCCESS", 1)]
    assert materializations > 50
    assert not list(home.rglob("*.db")), list(home.rglob("*.db"))

    # the online store is Redis: every stored prediction of the day has its hash there; no SQLite file
    spec = load_specs()[SPEC]
    with warehouse.connect(settings.warehouse_path(), read_only=True) as wh:
        stored = scoring.read_partition(wh, spec, NEXT_DAY)
    assert len(stored) > 500
    client = redis.client()
    view_ts = f"_ts:{SPEC}_predictions".encode()
    feature_ts = b"_ts:plane_daily_features"
    served, with_features = 0, 0
    for key in client.scan_iter(count=1000):
        fields = client.hkeys(key)
        served += view_ts in fields
        with_features += feature_ts in fields
    assert served == len(stored) and with_features > 100
    assert not Path(paths[settings.ONLINE_STORE_VAR]).exists()

    # `predict KEY` serves the warehouse's row: the top score, and a cold-start fallback (else the median score)
    stored = stored.sort_values("score", ascending=False).reset_index(drop=True)
    fallback = stored[stored["fallback_reason"].notna()]
    for row in (stored.iloc[0], fallback.iloc[0] if len(fallback) else stored.iloc[len(stored) // 2]):
        out = _cli("predict", row["flight_id"], "--model", SPEC, "--json", env=env)
        (answer,) = json.loads(out.stdout)
        assert answer["found"] and answer["key"] == row["flight_id"]
        assert answer["score"] == float(row["score"])  # exactly: a float64 through Redis and back
        assert (answer["model_version"], answer["model_sha256"], answer["run_id"]) == (
            int(row["model_version"]), row["model_sha256"], row["run_id"])
        assert answer["partition_date"] == NEXT_DAY.isoformat()
