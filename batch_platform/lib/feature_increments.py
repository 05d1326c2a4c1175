"""Incremental feature builds: which days of each day-partitioned feature dataset a build rewrites.

A feature mart materialized as a ``parquet_dataset`` with ``partition_by`` (``batch_platform/dbt_macros/
parquet_dataset.sql``) is a folder of one hive partition per day; the intermediate tables it reads are dbt
``incremental`` models keyed on their day (``unique_key``). Each day's rows depend only on the raw batches of
that day and the days before it (trailing windows, validity from the load log), so when the batches of the days
from ``D`` on changed, every day before ``D`` is still what a full build would write. A build then:

1. :func:`plan`: per dataset, the first day to rewrite (``since``), or ``None`` for every day. ``since`` is the
   first day whose load changed since the published build of that dataset: a loaded, reloaded or removed batch of
   a raw table upstream of the dataset (the load log ``raw._batch_loads``: its checksum, load time, publication and
   final instants). Every day is rewritten when the dataset was never built, when its definition changed (the SQL
   of the model and of everything upstream of it, the macros they call, the project's vars: :func:`definition`),
   when a snapshot table upstream of it changed (it has no days), or when a full refresh is asked for. Nothing
   changed: ``since`` is the day after the newest partition (no day is rewritten).
2. :func:`carry_over`: hard-links the published generation's partitions before ``since`` into the generation
   being built (a link, not a copy: neither generation's files are ever written in place; dbt writes new files);
   :func:`carry_over_table` copies the rows of those days of an intermediate table (the trailing windows, dbt
   ``incremental`` models keyed on their day).
3. dbt computes and writes the days from ``since`` on (``BATCH_PLATFORM_FEATURES_SINCE``: :func:`since_env`).
4. :func:`record`, in the publication's transaction: what each rebuilt dataset was built from (its definition and
   the load log rows of its raw tables), the reference of the next build's plan. Datasets the build did not
   rebuild keep their record.

A dataset the build writes whole and one it appends to end with the same bytes per day
(``tests/test_feature_increments.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from batch_platform.lib.warehouse import LOADS_TABLE, table_exists

MATERIALIZATION = "parquet_dataset"
SINCE_ENV = "BATCH_PLATFORM_FEATURES_SINCE"
DEFINITIONS = "main._feature_dataset_definitions"  # (dataset, definition)
BUILT_FROM = "main._feature_dataset_loads"  # (dataset, table_name, partition_key, load)
SNAPSHOT_KEY = "__all__"  # partition_key of a raw table without days


FILES, TABLE = "files", "table"


@dataclass(frozen=True)
class Dataset:
    """A model built by day: a feature mart written as a parquet dataset (``kind`` FILES: its folder under the
    generation's) or an intermediate table materialized ``incremental`` (``kind`` TABLE, in schema
    ``<layer>__<generation>``); its DATE column (None: a dataset of one file, always rewritten), its definition
    fingerprint and the raw tables upstream of it (``raw.flights``)."""

    name: str
    partition_by: str | None
    definition: str
    raw_tables: tuple[str, ...]
    kind: str = FILES
    layer: str | None = None


def _upstream(manifest: Mapping[str, Any], unique_id: str, past_the_log: bool = True) -> set[str]:
    """Every node upstream of ``unique_id``; without ``past_the_log``, not past a model reading the load log (which
    names every raw table for lineage, while a feature reads only its own feed's rows of it)."""
    log = next((s for s, src in manifest["sources"].items()
                if f"{src['schema']}.{src['identifier']}" == LOADS_TABLE), None)
    seen, todo = set(), [unique_id]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        parents = manifest["parent_map"].get(node, [])
        if past_the_log or log not in parents:
            todo += parents
    return seen


def _macros(manifest: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in manifest["macros"]:
            continue
        seen.add(name)
        todo += manifest["macros"][name].get("depends_on", {}).get("macros", [])
    return seen


def definition(manifest: Mapping[str, Any], unique_id: str, project_vars: Any = None) -> str:
    """sha256 of what a model's rows are computed by: its SQL and config and those of every model and seed upstream
    of it, the macros they call (and the macros those call), the materialization, and the project's vars."""
    nodes = sorted(n for n in _upstream(manifest, unique_id) if n in manifest["nodes"])
    macro_roots = [m for n in nodes for m in manifest["nodes"][n].get("depends_on", {}).get("macros", [])]
    macro_roots += [m for m in manifest["macros"] if m.endswith(f"materialization_{MATERIALIZATION}_duckdb")]
    parts = [json.dumps(project_vars, sort_keys=True, default=str)]
    for n in nodes:
        node = manifest["nodes"][n]
        parts.append(json.dumps([n, node["checksum"]["checksum"], node.get("config", {})], sort_keys=True, default=str))
    for m in sorted(_macros(manifest, macro_roots)):
        parts.append(json.dumps([m, manifest["macros"][m]["macro_sql"]]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def datasets(manifest: Mapping[str, Any], project_vars: Any = None,
             validity_feeds: Mapping[str, str] | None = None) -> dict[str, Dataset]:
    """The manifest's parquet datasets by model name. Their raw tables: those they read rows from, and the feed
    whose load log rows say when their rows are valid (``validity_feeds``: table -> feed, the time model's)."""
    out = {}
    for unique_id, node in manifest["nodes"].items():
        config = node.get("config", {})
        if node.get("resource_type") != "model":
            continue
        if config.get("materialized") == MATERIALIZATION:
            kind, day = FILES, config.get("partition_by")
        elif config.get("materialized") == "incremental" and isinstance(config.get("unique_key"), str):
            kind, day = TABLE, config["unique_key"]
        else:
            continue
        raw = {f"{manifest['sources'][s]['schema']}.{manifest['sources'][s]['identifier']}"
               for s in _upstream(manifest, unique_id, past_the_log=False) if s in manifest["sources"]}
        if (validity_feeds or {}).get(node["name"]):
            raw.add(f"raw.{validity_feeds[node['name']]}")
        out[node["name"]] = Dataset(node["name"], day, definition(manifest, unique_id, project_vars),
                                    tuple(sorted(raw - {LOADS_TABLE})), kind, config.get("schema"))
    return out


def _exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    return table_exists(con, *qualified.split("."))


def loads(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    """The load log now: (raw table, partition key) -> what identifies that load (checksum, load and validity
    instants)."""
    if not _exists(con, LOADS_TABLE):
        return {}
    rows = con.execute(f"SELECT table_name, partition_key, concat_ws('|', checksum, CAST(loaded_at AS VARCHAR), "
                       f"CAST(published_at AS VARCHAR), CAST(final_at AS VARCHAR)) FROM {LOADS_TABLE}").fetchall()
    return {(t, k): v for t, k, v in rows}


def partitions(folder: Path, column: str) -> dict[dt.date, Path]:
    """A dataset folder's day partitions (``<column>=YYYY-MM-DD``)."""
    out = {}
    for p in Path(folder).glob(f"{column}=*") if Path(folder).is_dir() else []:
        try:
            out[dt.date.fromisoformat(p.name.split("=", 1)[1])] = p
        except ValueError:
            continue
    return out


def _table(ds: Dataset, generation: str) -> str:
    return f'"{ds.layer}__{generation}"."{ds.name}"'


def _days(con: duckdb.DuckDBPyConnection, ds: Dataset, generation: str | None, generations_dir: Path
          ) -> list[dt.date]:
    """The days of ``ds`` that generation ``generation`` holds (none without a day column)."""
    if generation is None or ds.partition_by is None:
        return []
    if ds.kind == FILES:
        return sorted(partitions(Path(generations_dir) / generation / ds.name, ds.partition_by))
    if not _exists(con, f"{ds.layer}__{generation}.{ds.name}"):
        return []
    return [d for (d,) in con.execute(f'SELECT DISTINCT "{ds.partition_by}" FROM {_table(ds, generation)} '
                                      "ORDER BY 1").fetchall() if d is not None]


def plan(con: duckdb.DuckDBPyConnection, built: Mapping[str, Dataset], published: str | None,
         generations_dir: Path, full_refresh: bool = False,
         current_loads: Mapping[tuple[str, str], str] | None = None) -> dict[str, dt.date | None]:
    """Per dataset of ``built`` (those the build writes), the first day it rewrites; None: every day (see the
    module docstring). ``published``: the published generation (None before the first build)."""
    now = loads(con) if current_loads is None else current_loads
    recorded_definitions, recorded_loads = {}, {}
    if _exists(con, DEFINITIONS) and _exists(con, BUILT_FROM):
        recorded_definitions = dict(con.execute(f"SELECT dataset, definition FROM {DEFINITIONS}").fetchall())
        for name, table, key, load in con.execute(
                f"SELECT dataset, table_name, partition_key, load FROM {BUILT_FROM}").fetchall():
            recorded_loads.setdefault(name, {})[(table, key)] = load
    out: dict[str, dt.date | None] = {}
    for name, ds in built.items():
        days = _days(con, ds, published, generations_dir)
        if full_refresh or not days or recorded_definitions.get(name) != ds.definition:
            out[name] = None
            continue
        before = recorded_loads.get(name, {})
        changed = {k for k in set(before) | set(now)
                   if k[0] in ds.raw_tables and before.get(k) != now.get(k)}
        if any(key == SNAPSHOT_KEY for _, key in changed):
            out[name] = None
            continue
        try:
            first = min((dt.date.fromisoformat(key) for _, key in changed), default=None)
        except ValueError:
            out[name] = None
            continue
        out[name] = first if first is not None else max(days) + dt.timedelta(days=1)
    return out


def since_env(since: Mapping[str, dt.date | None]) -> str:
    """``BATCH_PLATFORM_FEATURES_SINCE`` for dbt: the datasets it appends to, with their first day."""
    return json.dumps({name: day.isoformat() for name, day in sorted(since.items()) if day is not None})


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not supported: a copy
        shutil.copy2(src, dst)


def carry_over(source_dir: Path, target_dir: Path, name: str, column: str | None,
               before: dt.date | None) -> int:
    """Link the published dataset ``name``'s files into the generation being built: the partitions of the days
    before ``before`` (every file when ``before`` is ``date.max``; none when it is None). Returns the files linked."""
    src = Path(source_dir) / name
    if before is None or not src.is_dir():
        return 0
    dst = Path(target_dir) / name
    dst.mkdir(parents=True, exist_ok=True)
    linked = 0
    if column is None or before == dt.date.max:
        for f in src.rglob("*"):
            if f.is_file():
                (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                _link(f, dst / f.relative_to(src))
                linked += 1
        return linked
    for day, folder in partitions(src, column).items():
        if day < before:
            (dst / folder.name).mkdir()
            for f in folder.iterdir():
                _link(f, dst / folder.name / f.name)
                linked += 1
    return linked


def carry_over_table(con: duckdb.DuckDBPyConnection, ds: Dataset, source: str, target: str,
                     before: dt.date | None) -> int:
    """The table ``ds`` of generation ``target`` (the one being built): the rows of the published generation
    ``source`` of the days before ``before`` (every row for ``date.max``; no table for None, dbt builds it whole).
    Returns the rows carried."""
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ds.layer}__{target}"')
    con.execute(f"DROP TABLE IF EXISTS {_table(ds, target)}")
    if before is None or not _exists(con, f"{ds.layer}__{source}.{ds.name}"):
        return 0
    where = "" if before == dt.date.max else f""" WHERE "{ds.partition_by}" < DATE '{before.isoformat()}'"""
    con.execute(f"CREATE TABLE {_table(ds, target)} AS SELECT * FROM {_table(ds, source)}{where}")
    return con.execute(f"SELECT count(*) FROM {_table(ds, target)}").fetchall()[0][0]


def record(con: duckdb.DuckDBPyConnection, built: Mapping[str, Dataset],
           built_from: Mapping[tuple[str, str], str]) -> None:
    """Record what the datasets of ``built`` were built from (inside the publication's transaction)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {DEFINITIONS} (dataset VARCHAR PRIMARY KEY, definition VARCHAR)")
    con.execute(f"CREATE TABLE IF NOT EXISTS {BUILT_FROM} (dataset VARCHAR, table_name VARCHAR, "
                "partition_key VARCHAR, load VARCHAR)")
    for name, ds in built.items():
        con.execute(f"DELETE FROM {DEFINITIONS} WHERE dataset = ?", [name])
        con.execute(f"DELETE FROM {BUILT_FROM} WHERE dataset = ?", [name])
        con.execute(f"INSERT INTO {DEFINITIONS} VALUES (?, ?)", [name, ds.definition])
        rows = [(name, t, k, v) for (t, k), v in built_from.items() if t in ds.raw_tables]
        if rows:
            con.executemany(f"INSERT INTO {BUILT_FROM} VALUES (?, ?, ?, ?)", rows)
