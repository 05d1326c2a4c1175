"""A user's export of a declared table -- one day or many -- landed as the batches ingest loads
(``batch-platform land-file TABLE FILE``).

:func:`read_export` reads the file (CSV or Parquet, by its extension) with the contract's null tokens and casts each
declared column to its type; a column missing from the file, a column the contract does not declare, or a value that
is not of its type is an :class:`ExportError` naming the file and the column. :func:`land_export` cuts the rows into
one batch per day (:func:`batch_platform.lib.table_replay.replay_table`), each stamped published as the contract
declares, and lands only the days already published at ``now`` (an export that holds tomorrow's plan lands that day
tomorrow). The derived tables cut from the table land with it, each with its own columns and publication time, on
the days whose derived batch has not landed yet: the days to come land from an export of the derived table itself,
which upstream publishes ahead, and a published plan is never rewritten from the actuals. A snapshot table lands as
its snapshot, published ``now``. Landing the same rows again writes nothing.

Whatever is wrong in the rows themselves (a key twice, a value out of its physical range, a broken row rule) is
ingest's to find: it validates every batch against its contract and quarantines a bad one with a named error.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from batch_platform.lib.batch_files import batch_path, write_batch
from batch_platform.lib.contracts import TableContract
from batch_platform.lib.table_replay import day_sql, replay_table
from batch_platform.lib.time_model import TimeModel


class ExportError(ValueError):
    """An export file that cannot be landed as batches of its table (unreadable, other columns, a bad value)."""


@dataclass(frozen=True)
class Landed:
    table: str
    days: tuple[dt.date, ...]
    """The days landed (a batch each; empty for a snapshot)."""
    files_written: int
    not_yet_published: tuple[dt.date, ...] = ()
    """Days in the export whose batch is not published at ``now``: landed by a later call."""


def read_export(path: Path | str, contract: TableContract) -> pa.Table:
    """The rows of export ``path`` as ``contract``'s columns and types (see the module docstring)."""
    path = Path(path)
    quoted = str(path).replace("'", "''")
    if path.suffix == ".parquet":
        relation = f"read_parquet('{quoted}')"
    elif path.suffix == ".csv":
        nulls = ", ".join("'" + t.replace("'", "''") + "'" for t in contract.null_tokens)
        relation = f"read_csv('{quoted}', all_varchar = true, nullstr = [{nulls}])"
    else:
        raise ExportError(f"{path}: an export is a .csv or .parquet file")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        try:
            con.execute(f"CREATE TABLE export AS SELECT * FROM {relation}")
        except duckdb.Error as e:
            raise ExportError(f"{path}: cannot read: {str(e).splitlines()[0]}") from e
        got = [r[0] for r in con.execute("DESCRIBE export").fetchall()]
        missing = [c for c in contract.column_names if c not in got]
        extra = [c for c in got if c not in contract.column_names]
        if missing or extra:
            raise ExportError(f"{path}: columns differ from {contract.qualified_name}'s contract: missing {missing}, "
                              f"undeclared {extra}")
        casts = []
        for c in contract.columns:
            bad = con.execute(f'SELECT any_value(CAST("{c.name}" AS VARCHAR)) FROM export '
                              f'WHERE "{c.name}" IS NOT NULL AND TRY_CAST("{c.name}" AS {c.type}) IS NULL'
                              ).fetchall()[0][0]
            if bad is not None:
                raise ExportError(f"{path}: column {c.name}: {bad!r} is not a {c.type}")
            casts.append(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"')
        return con.sql(f"SELECT {', '.join(casts)} FROM export").to_arrow_table()


def export_days(rows: pa.Table, contract: TableContract) -> tuple[dt.date, ...]:
    """The days (partitions) ``rows`` of a daily table hold, in order."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("rows", rows)
        return tuple(r[0] for r in con.execute(f"SELECT DISTINCT {day_sql(contract)} FROM rows WHERE "
                                                f"{day_sql(contract)} IS NOT NULL ORDER BY 1").fetchall())


def land_export(landing: Path | str, contracts: dict[str, TableContract], derived_from: dict[str, str], table: str,
                path: Path | str, *, time_model: TimeModel, now: dt.datetime,
                rows: pa.Table | None = None) -> list[Landed]:
    """Land export ``path`` of ``table`` and of the derived tables cut from it (``derived_from``: derived table ->
    its base); returns what each table landed, the table first. A derived table's own export (its days to come)
    lands as any table's. ``rows``: the export as :func:`read_export` read it already (else it is read here)."""
    if table not in contracts:
        raise ExportError(f"no contract declares table {table!r} (declared: {', '.join(sorted(contracts))})")
    contract = contracts[table]
    rows = read_export(path, contract) if rows is None else rows
    source = f"export {Path(path).name}"
    if contract.is_snapshot:
        _, wrote = write_batch(landing, contract, rows, None, published_at=now, source=source)
        return [Landed(table, (), int(wrote))]
    days = export_days(rows, contract)
    if not days:
        raise ExportError(f"{path}: no rows to land")
    out = []
    for name in [table, *sorted(t for t, base in derived_from.items() if base == table)]:
        c = contracts[name]
        part, due = rows.select(c.column_names), days
        if name != table:  # a derived batch already landed was published on its own: never rewritten from here
            due = tuple(d for d in days if not batch_path(landing, c, d).exists())
            part = _on_days(part, c, due)
        if not due:
            out.append(Landed(name, (), 0))
            continue
        replayed = replay_table(landing, c, part, due[0], due[-1], time_model=time_model, now=now, source=source)
        out.append(Landed(name, replayed.days, replayed.files_written,
                          tuple(d for d in due if d not in set(replayed.days))))
    return out


def _on_days(rows: pa.Table, contract: TableContract, days: tuple[dt.date, ...]) -> pa.Table:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("rows", rows)
        return con.sql(f"SELECT * FROM rows WHERE {day_sql(contract)} IN (SELECT unnest(?::DATE[]))",
                       params=[list(days)]).to_arrow_table()


__all__ = ["ExportError", "Landed", "export_days", "land_export", "read_export"]
