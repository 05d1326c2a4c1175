"""Feature builds as generations: dbt builds a whole new generation where nobody reads, and the generation becomes
visible only when the build and its tests passed.

Two generations alternate, ``a`` and ``b``. A build of generation ``g`` writes:

- the warehouse schemas ``staging__g``, ``intermediate__g``, ``marts__g``, ``seeds__g`` (dbt's
  ``generate_schema_name`` appends the suffix; see ``batch_platform/dbt_macros/generate_schema_name.sql``);
- the feature files under ``<generations dir>/g/``: a folder ``<table>/`` per parquet dataset (the day-partitioned
  ones carry their unchanged days over from the published generation as hard links:
  ``batch_platform/lib/feature_increments.py``), or a file ``<table>.parquet`` per external mart.

Readers never see those names. They read the stable schemas ``staging``, ``intermediate``, ``marts``, ``seeds``,
whose relations are views over the published generation's, and the stable folder ``<features dir>``, a symbolic
link to the published generation's folder (Feast's sources point there). Publishing is one DuckDB transaction
that re-points every stable view and records the generation in ``main._feature_generation``, followed by the
link's atomic replacement. The warehouse record is the truth: a crash between the two is completed by
:func:`reconcile`, which every build, every Feast step and ``batch-platform doctor`` run first. A build that
fails, or is killed at any point, leaves the published generation as it was; the next build wipes the other
generation and starts it afresh.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import duckdb

GENERATIONS = ("a", "b")
LAYERS = ("staging", "intermediate", "marts", "seeds")
RECORD = "main._feature_generation"


class GenerationError(RuntimeError):
    """A generation cannot be published (e.g. the build left a stable schema's relation missing)."""


def schema(layer: str, generation: str) -> str:
    return f"{layer}__{generation}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Published:
    generation: str
    run_id: str | None
    published_at: dt.datetime | None


def published(con: duckdb.DuckDBPyConnection) -> Published | None:
    """The generation the stable schemas show, or None before the first published build."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                         "AND table_name = '_feature_generation'").fetchall()[0][0]
    if not exists:
        return None
    rows = con.execute(f"SELECT generation, run_id, published_at FROM {RECORD}").fetchall()
    return Published(*rows[0]) if rows else None


def next_generation(con: duckdb.DuckDBPyConnection) -> str:
    """The generation a new build writes: the one not published."""
    current = published(con)
    return GENERATIONS[0] if current is None or current.generation != GENERATIONS[0] else GENERATIONS[1]


def prepare(con: duckdb.DuckDBPyConnection, generation: str, generations_dir: Path) -> Path:
    """Empty ``generation``'s schemas and folder (what an earlier or interrupted build left); returns the folder."""
    current = published(con)
    if current is not None and current.generation == generation:
        raise GenerationError(f"generation {generation} is the published one: a build never writes it")
    for layer in LAYERS:
        con.execute(f"DROP SCHEMA IF EXISTS {_q(schema(layer, generation))} CASCADE")
    folder = Path(generations_dir) / generation
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _relations(con: duckdb.DuckDBPyConnection, schema_name: str) -> dict[str, str]:
    return dict(con.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = ?",
                            [schema_name]).fetchall())


def publish(con: duckdb.DuckDBPyConnection, generation: str, run_id: str | None = None,
            also: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> list[str]:
    """Make ``generation`` the one the stable schemas show, in one transaction, with what ``also`` writes (e.g.
    what the build was made from); returns the stable relations."""
    shown = []
    con.execute("BEGIN TRANSACTION")
    try:
        for layer in LAYERS:
            new = _relations(con, schema(layer, generation))
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(layer)}")
            for name, kind in _relations(con, layer).items():
                if kind == "BASE TABLE" or name not in new:  # a table: the layout before generations
                    con.execute(f"DROP {'TABLE' if kind == 'BASE TABLE' else 'VIEW'} {_q(layer)}.{_q(name)}")
            for name in sorted(new):
                con.execute(f"CREATE OR REPLACE VIEW {_q(layer)}.{_q(name)} AS "
                            f"SELECT * FROM {_q(schema(layer, generation))}.{_q(name)}")
                shown.append(f"{layer}.{name}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {RECORD} (generation VARCHAR, run_id VARCHAR, "
                    "published_at TIMESTAMPTZ)")
        con.execute(f"DELETE FROM {RECORD}")
        # this process's clock (as the run records and the SLIs), not DuckDB's
        con.execute(f"INSERT INTO {RECORD} VALUES (?, ?, ?)", [generation, run_id, dt.datetime.now(dt.UTC)])
        if also is not None:
            also(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return shown


def linked(features_dir: Path) -> str | None:
    """The generation the stable features folder links to (None: no link yet, or a plain folder)."""
    path = Path(features_dir)
    if not path.is_symlink():
        return None
    return Path(os.readlink(path)).name


def link(features_dir: Path, generations_dir: Path, generation: str) -> None:
    """Point the stable features folder at ``generation``'s folder, atomically (a relative link: a copied or moved
    data folder keeps pointing at its own files). A plain folder there (a data dir from before generations, or
    copied without its links) is set aside first."""
    features_dir, target = Path(features_dir), Path(generations_dir) / generation
    features_dir.parent.mkdir(parents=True, exist_ok=True)
    if features_dir.exists() and not features_dir.is_symlink():
        aside = features_dir.with_name(f".{features_dir.name}.before-generations-{uuid.uuid4().hex[:8]}")
        features_dir.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    tmp = features_dir.with_name(f".{features_dir.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(os.path.relpath(target, features_dir.parent), tmp)
    os.replace(tmp, features_dir)


def reconcile(con: duckdb.DuckDBPyConnection, features_dir: Path, generations_dir: Path) -> str | None:
    """Complete a publication interrupted between the warehouse and the link; returns what was done, or None."""
    current = published(con)
    path = Path(features_dir)
    if current is None or linked(path) == current.generation or (path.exists() and not path.is_symlink()):
        return None  # consistent; or a plain folder (not the platform's link), left to the next publication
    link(features_dir, generations_dir, current.generation)
    return f"features folder re-linked to generation {current.generation} (published by run {current.run_id})"


_VIEW_HEADER = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+.+?\s+AS\s+", re.IGNORECASE | re.DOTALL)


def clone(con: duckdb.DuckDBPyConnection, source: str, target: str, generations_dir: Path,
          skip: Collection[tuple[str, str]] = ()) -> int:
    """Copy generation ``source`` (its tables, views and files) into the prepared, empty generation ``target``;
    returns the relations copied. A build of some models starts from this copy: the models it does not rebuild
    are the published ones, the models it rebuilds replace theirs, and the result is again a whole generation.
    ``skip``: (layer, name) of relations not copied (those the build writes on what it carried over itself; the
    folders of parquet datasets are carried over by ``feature_increments.carry_over``, before: their views read
    them)."""
    src_dir, dst_dir = Path(generations_dir) / source, Path(generations_dir) / target
    for f in src_dir.iterdir() if src_dir.exists() else []:
        if f.is_file():
            shutil.copy2(f, dst_dir / f.name)
    copied = 0
    views = []
    for layer in LAYERS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema(layer, target))}")
        for name, kind in _relations(con, schema(layer, source)).items():
            if (layer, name) in skip:
                continue
            if kind == "BASE TABLE":
                con.execute(f"CREATE TABLE {_q(schema(layer, target))}.{_q(name)} AS "
                            f"SELECT * FROM {_q(schema(layer, source))}.{_q(name)}")
                copied += 1
            else:
                (sql,) = con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                                     [schema(layer, source), name]).fetchall()[0]
                views.append((layer, name, _retarget(_VIEW_HEADER.sub("", sql, count=1), source, target,
                                                     src_dir, dst_dir)))
    while views:  # views read views: create those whose inputs exist, until none is left
        pending = []
        for layer, name, body in views:
            try:
                con.execute(f"CREATE VIEW {_q(schema(layer, target))}.{_q(name)} AS {body}")
                copied += 1
            except duckdb.CatalogException:
                pending.append((layer, name, body))
        if len(pending) == len(views):
            raise GenerationError(f"cannot copy views {[f'{v[0]}.{v[1]}' for v in pending]} into generation "
                                  f"{target}: their inputs are missing")
        views = pending
    return copied


def _retarget(sql: str, source: str, target: str, src_dir: Path, dst_dir: Path) -> str:
    """A view's SQL reading generation ``target`` where it read ``source`` (schema names, feature file paths)."""
    for layer in LAYERS:
        sql = sql.replace(f'"{schema(layer, source)}"', f'"{schema(layer, target)}"')
        sql = re.sub(rf"\b{re.escape(schema(layer, source))}\.", f"{schema(layer, target)}.", sql)
    return sql.replace(f"{src_dir}/", f"{dst_dir}/")


def feature_table(features_dir: Path, name: str) -> Path:
    """Where the feature table ``name`` is read: its dataset folder ``<name>/`` (a ``parquet_dataset`` mart), else
    its file ``<name>.parquet`` (an ``external`` mart, as a scaffolded project writes them). DuckDB, pyarrow and
    Feast read either."""
    folder, file = Path(features_dir) / name, Path(features_dir) / f"{name}.parquet"
    return file if file.exists() and not folder.is_dir() else folder


def published_relation(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """The published generation's own relation behind a stable name (``marts.flight_schedule`` →
    ``marts__a.flight_schedule``), e.g. to edit the data a test or a benchmark scores; the name itself before any
    publication."""
    layer, _, name = relation.partition(".")
    current = published(con)
    return relation if current is None or layer not in LAYERS else f"{schema(layer, current.generation)}.{name}"
