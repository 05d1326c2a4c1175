"""Point-in-time joins: the platform's ``historical_features`` against a hand-written DuckDB ``ASOF LEFT JOIN``.

The shipped feature repository (``feature_repo/``, feature service ``flight_delay_v1``: five views, 43 features,
TTLs of 3 days, 2 days and none) is applied in a temporary folder over synthetic feature files in the schemas of
its views, sized like the dbt marts: a row per key and day (4,000 planes, 200 routes, 16 carriers, 3 origins;
each row missing with 10%, some NULL values), valid from 11:00 UTC the next day, written sorted by key and day as
dbt writes them. The entity frame is a training set: ~860 flights a day stamped at the day's prediction cutoff
(22:00 UTC the day before), 48 days (x1, ~41k rows) and 480 days (x10, ~412k rows).

Both sides read the same files and return a pandas frame of the entity rows in order plus the features; the raw
query is what a person would write for this one service (its views and TTLs typed in), without the registry,
validation or dtype guarantees. Each figure is the median of ``REPEATS`` warm runs (the client opened and the
registry read once before, as in a run), with the spread (min-max); the rows of both are checked identical.
Target: platform <= ``TARGET`` x raw.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure import timed
import pyarrow as pa
import pyarrow.parquet as pq

SERVICE = "flight_delay_v1"
TARGET = 1.3
REPEATS = 5
FLIGHTS_PER_DAY = 860
SCALES = {"x1": 48, "x10": 480}  # days of entity rows
KEYS = {"tailnum": 4000, "route": 200, "carrier": 16, "origin": 3}
T0 = pd.Timestamp("2013-01-01", tz="UTC")
PA_TYPES = {"INT64": pa.int64(), "DOUBLE": pa.float64(), "STRING": pa.string(),
            "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC")}


def _keys(entity: str) -> np.ndarray:
    return np.array([f"{entity[:2]}{i:05d}" for i in range(KEYS[entity])], dtype=object)


def write_features(store, features: Path, days: int, rng: np.random.Generator) -> dict[str, str]:
    """One parquet file per view of the service, in the view's dataset folder (as dbt writes the feature tables);
    returns {view: entity column}."""
    service = store.get_feature_service(SERVICE)
    out = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        (key,) = view.join_keys
        keys = _keys(key)
        if view.ttl:
            day = np.repeat(np.arange(-5, days + 1), len(keys))
            k = np.tile(keys, days + 6)
            keep = rng.random(len(k)) >= 0.1
            k, day = k[keep], day[keep]
            ts = T0 + pd.to_timedelta(day, unit="D") + pd.Timedelta(hours=11)
        else:  # attributes: once per key
            k = keys[rng.random(len(keys)) >= 0.1]
            ts = pd.DatetimeIndex([pd.Timestamp("2000-01-01", tz="UTC")] * len(k))
        n = len(k)
        cols = {key: pa.array(k, pa.string()), "feature_ts": pa.array(ts, PA_TYPES["UNIX_TIMESTAMP"])}
        for f in view.features:
            kind = f.dtype.to_value_type().name
            null = rng.random(n) < 0.05
            if kind == "UNIX_TIMESTAMP":
                values = pa.array(ts, PA_TYPES[kind])
            elif kind == "INT64":
                values = pa.array(rng.integers(0, 500, n), pa.int64(), mask=null)
            elif kind == "DOUBLE":
                values = pa.array(rng.normal(size=n), pa.float64(), mask=null)
            else:
                values = pa.array(rng.choice([f"{f.name}-{j}" for j in range(20)], n), pa.string(), mask=null)
            cols[f.name] = values
        (features / view.name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), features / view.name / "data_0.parquet")
        out[view.name] = key
    return out


def entity_frame(days: int, rng: np.random.Generator) -> pd.DataFrame:
    n = days * FLIGHTS_PER_DAY
    day = np.repeat(np.arange(days), FLIGHTS_PER_DAY)
    pick = {e: _keys(e)[rng.integers(0, KEYS[e], n)] for e in KEYS}
    pick["tailnum"][rng.random(n) < 0.02] = "N-new"  # planes in no table
    return pd.DataFrame({
        "flight_id": [f"f{i:07d}" for i in range(n)],
        **pick,
        "event_timestamp": (T0 + pd.to_timedelta(day, unit="D") - pd.Timedelta(hours=2)).astype("datetime64[us, UTC]"),
        "label": rng.integers(0, 2, n).astype("int8"),
    })


def raw_sql(store, keys: dict[str, str], service: str = SERVICE) -> str:
    """The hand-written query for ``service``: one ASOF LEFT JOIN per view, TTL as a CASE."""
    service = store.get_feature_service(service)
    joins, selects = [], []
    for i, p in enumerate(service.feature_view_projections):
        view = store.get_feature_view(p.name)
        key = keys[view.name]
        joins.append(f"ASOF LEFT JOIN read_parquet('{view.batch_source.path}') v{i} "
                     f"ON e.{key} = v{i}.{key} AND e.event_timestamp >= v{i}.feature_ts")
        for f in p.features:
            if view.ttl:
                selects.append(f"CASE WHEN v{i}.feature_ts + INTERVAL {int(view.ttl.total_seconds())} SECOND "
                               f">= e.event_timestamp THEN v{i}.{f.name} END AS {f.name}")
            else:
                selects.append(f"v{i}.{f.name}")
    return (f"SELECT e.* EXCLUDE (__row), {', '.join(selects)} FROM (SELECT *, row_number() OVER () AS __row "
            f"FROM entities) e {' '.join(joins)} ORDER BY e.__row")


def raw_join(sql: str, entities: pd.DataFrame) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", entities)
        return con.sql(sql).df()
    finally:
        con.close()


def same_rows(ours: pd.DataFrame, raw: pd.DataFrame) -> bool:
    if list(ours.columns) != list(raw.columns) or len(ours) != len(raw):
        return False
    for c in ours.columns:
        a, b = ours[c], raw[c]
        if pd.api.types.is_float_dtype(a) and not pd.api.types.is_float_dtype(b):
            b = pd.to_numeric(b).astype("float64")
        if pd.api.types.is_datetime64_any_dtype(a):
            b = pd.to_datetime(b, utc=True).astype(a.dtype)
        if not a.reset_index(drop=True).equals(b.reset_index(drop=True)):
            print(f"  column {c} differs", flush=True)
            return False
    return True


def run(repeats: int = REPEATS) -> list[dict]:
    from batch_platform import settings
    from batch_platform.lib.feature_store import FeatureStoreClient

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        features = base / "features"
        features.mkdir()
        os.environ.update({settings.FEATURES_VAR: str(features),
                           settings.PREDICTIONS_EXPORT_VAR: str(base / "predictions_export"),
                           settings.FEAST_REGISTRY_VAR: str(base / "feast" / "registry.db"),
                           settings.ONLINE_STORE_VAR: str(base / "feast" / "online_store.db")})
        client = FeatureStoreClient()
        client.apply()
        store = client.store
        for name, days in SCALES.items():
            rng = np.random.default_rng(0)
            keys = write_features(store, features, days, rng)
            entities = entity_frame(days, rng)
            sql = raw_sql(store, keys)
            client.historical_features(entities.iloc[:100], SERVICE)  # warm: registry read, files cached
            raw_join(sql, entities.iloc[:100])
            platform_s, ours = timed(lambda: client.historical_features(entities, SERVICE), repeats)
            raw_s, raw = timed(lambda: raw_join(sql, entities), repeats)
            identical = same_rows(ours, raw)
            p, r = statistics.median(platform_s), statistics.median(raw_s)
            results.append({
                "name": f"pit_{name}", "rows": len(entities), "features": len(ours.columns) - len(entities.columns),
                "platform_s": round(p, 3), "raw_s": round(r, 3), "ratio": round(p / r, 2), "target": TARGET,
                "platform_spread_s": [round(min(platform_s), 3), round(max(platform_s), 3)],
                "raw_spread_s": [round(min(raw_s), 3), round(max(raw_s), 3)],
                "rows_identical": identical, "ok": identical and p / r <= TARGET,
            })
    return results


def main() -> list[dict]:
    print(f"\npoint-in-time join ({SERVICE}): platform historical_features vs raw DuckDB ASOF LEFT JOIN, "
          f"median of {REPEATS}", flush=True)
    results = run()
    print(f"{'run':>8} {'rows':>9} {'platform s':>11} {'spread':>13} {'raw s':>7} {'spread':>13} {'ratio':>6} "
          f"{'target':>7} {'identical':>9} {'ok':>4}")
    for r in results:
        ps, rs = r["platform_spread_s"], r["raw_spread_s"]
        print(f"{r['name']:>8} {r['rows']:>9,} {r['platform_s']:>11.3f} {ps[0]:>6.3f}-{ps[1]:<6.3f} "
              f"{r['raw_s']:>7.3f} {rs[0]:>6.3f}-{rs[1]:<6.3f} {r['ratio']:>6.2f} {r['target']:>7.1f} "
              f"{str(r['rows_identical']):>9} {'ok' if r['ok'] else 'MISS':>4}")
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r["ok"] for r in main()) else 1)
