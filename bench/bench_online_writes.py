"""Online writes: values per second into the wide SQLite online store, the platform's bulk paths against a raw
one-transaction ``executemany`` into a table of the same columns in the same file.

- **predictions**: a day of ``flight_delay`` predictions (x1: 1,000 rows, x10: 10,000, x100: 100,000) written by
  ``FeatureStoreClient.write_online`` (from the scored frame: conversion, upsert where the newer event wins, one
  transaction) against the raw write of the same rows as tuples already in hand (built before the clock), one
  ``executemany`` of ``INSERT OR REPLACE`` (last write wins, what a hand-written online table does) in one
  transaction;
- **materialization**: synthetic feature files in the schemas of the shipped service's views (``bench_pit``'s:
  4,000 planes, 200 routes, 16 carriers, 3 origins, a row per key and day; x1: 48 days, x10: 480), materialized
  by ``FeatureStoreClient.materialize`` over the whole range in one window, against raw DuckDB (the latest row
  per key, ``QUALIFY row_number()``, epoch conversions in SQL, ``fetchall``) + one ``executemany`` per view in
  one transaction. Feast's own ``materialize`` into its stock SQLite online store (one row per key and feature)
  is shown for reference at x1.

Each figure is the median of ``RUNS`` runs (tables emptied before each, outside the clock), platform and raw
alternating; rows read back from both tables must be identical. Both connections write with WAL and
``synchronous=NORMAL`` (the store's settings). Target: platform rate >= 0.5x raw.

    python -m bench.bench_online_writes        (or: python -m bench --only online_writes)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import online_env
from bench.measure import figure, median

PREDICTION_SIZES = {"x1": 1_000, "x10": 10_000, "x100": 100_000}
FEATURE_DAYS = {"x1": 48, "x10": 480}
RUNS = 5
TARGET = 0.5
SERVICE = "flight_delay_v1"
SQL_TYPES = {"FLOAT": "REAL", "DOUBLE": "REAL", "INT32": "INTEGER", "INT64": "INTEGER", "BOOL": "INTEGER",
             "STRING": "TEXT", "BYTES": "BLOB", "UNIX_TIMESTAMP": "INTEGER"}


def _quick() -> None:
    global PREDICTION_SIZES, FEATURE_DAYS, RUNS
    PREDICTION_SIZES, FEATURE_DAYS, RUNS = {"x1": 1_000, "x10": 10_000}, {"x1": 8, "x10": 80}, 3


def _raw_connection(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _raw_table(con: sqlite3.Connection, name: str, features: dict[str, str]) -> str:
    cols = ", ".join(f'"{f}" {SQL_TYPES[k]}' for f, k in features.items())
    con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (entity_key TEXT PRIMARY KEY, event_ts INTEGER NOT NULL, '
                f"created_ts INTEGER, {cols}) WITHOUT ROWID")
    return f'INSERT OR REPLACE INTO "{name}" VALUES ({", ".join("?" * (len(features) + 3))})'


def _raw_insert(con: sqlite3.Connection, sql: str, rows: list[tuple]) -> None:
    con.execute("BEGIN IMMEDIATE")
    con.executemany(sql, rows)
    con.execute("COMMIT")


def _dump(con: sqlite3.Connection, table: str) -> list[tuple]:
    return con.execute(f'SELECT * FROM "{table}" ORDER BY entity_key').fetchall()


def _rate(seconds: list[float], values: int) -> list[float]:
    return [values / s for s in seconds]


# ----------------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------------
def _prediction_tuples(frame: pd.DataFrame, key: str, features: dict[str, str]) -> list[tuple]:
    """The view's frame as the raw side has it in hand: (key, event µs, None, *values as stored)."""
    cols = [frame[key].astype(str).tolist(),
            (frame["event_timestamp"].astype("datetime64[us, UTC]").astype("int64")).tolist(), [None] * len(frame)]
    for f, kind in features.items():
        s = frame[f]
        if kind == "UNIX_TIMESTAMP":
            cols.append((s.astype("datetime64[us, UTC]").astype("int64") // 1_000_000).tolist())
        elif kind in ("INT64", "INT32", "BOOL"):
            cols.append([None if pd.isna(v) else int(v) for v in s])
        elif kind in ("DOUBLE", "FLOAT"):
            cols.append([None if pd.isna(v) else float(v) for v in s])
        else:
            cols.append([None if v is None else str(v) for v in s])
    return list(zip(*cols))


def predictions(client, spec, path: Path) -> list[dict]:
    from batch_platform.lib import serving
    from batch_platform.lib.feast_wide_store import layout_of

    view = serving.view_name(spec)
    layout = layout_of(client.store.project, client.store.get_feature_view(view))
    con = _raw_connection(path)
    insert = _raw_table(con, "raw_predictions", layout.features)
    scored = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    figures = []
    try:
        for scale, n in PREDICTION_SIZES.items():
            frame = serving.push_frame(spec, online_env.prediction_rows(online_env.keys(n), scored, seed=n))
            rows = _prediction_tuples(frame, spec.entity.key, layout.features)
            ours, theirs = [], []
            for _ in range(RUNS):
                con.execute(f'DELETE FROM "{layout.table}"')
                t0 = time.perf_counter()
                written = client.write_online(view, [frame])
                ours.append(time.perf_counter() - t0)
                con.execute('DELETE FROM "raw_predictions"')
                t0 = time.perf_counter()
                _raw_insert(con, insert, rows)
                theirs.append(time.perf_counter() - t0)
            same = written == n and _dump(con, layout.table) == _dump(con, "raw_predictions")
            values = n * len(layout.features)
            p, r = _rate(ours, values), _rate(theirs, values)
            figures.append(figure(
                f"online write, predictions, {scale} ({n:,} rows x {len(layout.features)} values)", "values/s",
                median(p), median(r), target=f">= {TARGET:g}x raw", meets=lambda x: x >= TARGET, identical=same,
                platform_runs=p, raw_runs=r,
                note="write_online from the scored frame vs executemany of the same tuples in hand"))
    finally:
        con.close()
    return figures


# ----------------------------------------------------------------------------------------------------------------
# Materialization
# ----------------------------------------------------------------------------------------------------------------
def _raw_select(view, features: dict[str, str], start: dt.datetime, end: dt.datetime) -> str:
    source = view.batch_source
    (key,) = view.join_keys
    ts = f'"{source.timestamp_field}"'
    values = [f'epoch_us("{f}") // 1000000' if k == "UNIX_TIMESTAMP" else f'"{f}"' for f, k in features.items()]
    created = f'epoch_us("{source.created_timestamp_column}")' if source.created_timestamp_column else "NULL"
    order = ts + " DESC" + (f', "{source.created_timestamp_column}" DESC' if source.created_timestamp_column else "")
    return (f'SELECT "{key}"::VARCHAR, epoch_us({ts}), {created}, {", ".join(values)} '
            f"FROM read_parquet('{source.path}') WHERE {ts} BETWEEN '{start.isoformat()}'::TIMESTAMPTZ "
            f"AND '{end.isoformat()}'::TIMESTAMPTZ "
            f"QUALIFY row_number() OVER (PARTITION BY \"{key}\" ORDER BY {order}) = 1")


def _raw_materialize(path: Path, jobs: list[tuple[str, str, str]]) -> int:
    import duckdb

    con = duckdb.connect()
    online = _raw_connection(path)
    written = 0
    try:
        con.execute("SET TimeZone = 'UTC'")
        for select, insert, _ in jobs:
            rows = con.execute(select).fetchall()
            _raw_insert(online, insert, rows)
            written += len(rows)
    finally:
        con.close()
        online.close()
    return written


def _feast_reference(client, base: Path, views: list, start: dt.datetime, end: dt.datetime) -> tuple[float, int]:
    """Feast's own materialization into its stock SQLite online store: (seconds, values)."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root = base / "feast_stock"
    root.mkdir()
    config = RepoConfig(project=client.store.project, provider="local", entity_key_serialization_version=3,
                        registry={"registry_type": "file", "path": str(root / "registry.db")},
                        offline_store={"type": "duckdb"}, online_store={"type": "sqlite", "path": str(root / "o.db")})
    config.repo_path = root
    store = FeatureStore(repo_path=str(root), config=config)
    entities = [client.store.get_entity(name) for v in views for name in v.entities]
    store.apply([*{e.name: e for e in entities}.values(), *views])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        store.materialize(start, end, feature_views=[v.name for v in views])
    seconds = time.perf_counter() - t0
    with sqlite3.connect(root / "o.db") as con:
        values = sum(con.execute(f'SELECT count(*) FROM "{client.store.project}_{v.name}"').fetchone()[0]
                     for v in views)
    return seconds, values


def materialization(client, path: Path, features_dir: Path, base: Path) -> list[dict]:
    from bench import bench_pit
    from batch_platform.lib.feast_wide_store import layout_of

    store = client.store
    service = store.get_feature_service(SERVICE)
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    start = dt.datetime(1999, 12, 31, tzinfo=dt.UTC)  # the attributes' rows are stamped 2000-01-01
    con = _raw_connection(path)
    figures = []
    try:
        jobs = []
        for v in views:
            layout = layout_of(store.project, v)
            jobs.append((layout, _raw_table(con, f"raw_{v.name}", layout.features)))
        for scale, days in FEATURE_DAYS.items():
            bench_pit.write_features(store, features_dir, days, np.random.default_rng(0))
            end = (bench_pit.T0 + pd.Timedelta(days=days + 1, hours=12)).to_pydatetime()
            batch_days = (end - start).days + 1  # one window: the same work as the raw side's one pass
            selects = [(_raw_select(v, layout.features, start, end), insert, layout.table)
                       for v, (layout, insert) in zip(views, jobs)]
            ours, theirs = [], []
            for _ in range(RUNS):
                for layout, _ in jobs:
                    con.execute(f'DELETE FROM "{layout.table}"')
                t0 = time.perf_counter()
                summary = client.materialize(start, end, batch_days=batch_days, views=[v.name for v in views],
                                             allow_rewind=True)
                ours.append(time.perf_counter() - t0)
                for v in views:
                    con.execute(f'DELETE FROM "raw_{v.name}"')
                t0 = time.perf_counter()
                written = _raw_materialize(path, selects)
                theirs.append(time.perf_counter() - t0)
            same = summary.rows == written and all(_dump(con, layout.table) == _dump(con, f"raw_{v.name}")
                                                   for v, (layout, _) in zip(views, jobs))
            values = sum(con.execute(f'SELECT count(*) FROM "{layout.table}"').fetchone()[0] * len(layout.features)
                         for layout, _ in jobs)
            p, r = _rate(ours, values), _rate(theirs, values)
            figures.append(figure(
                f"materialization, {len(views)} views, {scale} ({days} days, {written:,} keys, {values:,} values)",
                "values/s", median(p), median(r), target=f">= {TARGET:g}x raw", meets=lambda x: x >= TARGET,
                identical=same, platform_runs=p, raw_runs=r,
                note="FeatureStoreClient.materialize (one window) vs DuckDB latest-per-key + executemany"))
            if scale == next(iter(FEATURE_DAYS)):
                seconds, feast_values = _feast_reference(client, base, views, start, end)
                figures.append(figure(
                    f"materialization, Feast's own SQLite store, {scale} ({feast_values:,} values)", "values/s",
                    feast_values / seconds, median(r), target=None, meets=None, identical=feast_values == values,
                    note="reference: feast materialize into Feast's stock SQLite store (a row per key and "
                         "feature), one run; raw: the raw rate above"))
    finally:
        con.close()
    return figures


def run(quick: bool = False) -> list[dict]:
    if quick:
        _quick()
    from batch_platform.lib.feature_store import FeatureStoreClient
    from batch_platform.lib.specs import load_specs

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        online_env.apply_in(base)
        client = FeatureStoreClient()
        spec = load_specs()[online_env.SPEC]
        path = client.online_store_path
        return predictions(client, spec, path) + materialization(client, path, base / "features", base)


def main(quick: bool = False) -> list[dict]:
    from bench.report import print_table

    figures = run(quick)
    print_table("online writes: the platform's bulk paths vs raw executemany, same rows, same file", figures)
    return figures


if __name__ == "__main__":
    sys.exit(0 if all(f["ok"] is not False for f in main("--quick" in sys.argv)) else 1)
