"""The DuckDB warehouse: serialized access, atomic partition replacement, content checksums.

DuckDB allows one process to hold a database file open for writing (and no other process may open it at all
meanwhile). Every connection here is taken under an OS file lock beside the database file: exclusive for
read-write, shared for read-only. This holds for Dagster steps in separate processes, for concurrent runs, for
the CLI and (later) for dbt's subprocess, whatever executor or instance settings are in force; the Dagster pool
``duckdb_warehouse`` additionally keeps such steps from being started at the same time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from batch_platform.lib.contracts import TableContract
from batch_platform.lib import faults
from batch_platform.lib.files import file_lock

PARTITION_COLUMN = "_partition_date"
LINEAGE_COLUMNS = {
    "_batch_file": "VARCHAR",  # file name of the landed batch (no directory: reruns from elsewhere stay equal)
    "_batch_sha256": "VARCHAR",  # sha256 of the landed file's bytes
}
LOADS_TABLE = "raw._batch_loads"
LOAD_HISTORY_TABLE = "raw._batch_load_history"  # append-only: every version of every batch ever loaded
CHECKSUM_BATCH_ROWS = 16_384  # rows serialized at a time for the content checksum (same checksum, less memory)


class WarehouseLockTimeout(TimeoutError):
    """Another process held the warehouse longer than the configured timeout."""


@contextlib.contextmanager
def warehouse_lock(db_path: Path, *, exclusive: bool, timeout_s: float) -> Iterator[None]:
    with file_lock(Path(str(db_path) + ".lock"), exclusive=exclusive, timeout_s=timeout_s,
                   timeout_error=lambda: WarehouseLockTimeout(
                       f"warehouse {db_path} stayed locked by another process for {timeout_s:.0f}s")):
        yield


@contextlib.contextmanager
def connect(db_path: Path | str, *, read_only: bool = False, timeout_s: float = 600.0,
            memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse, held under the warehouse lock for its whole life. ``memory_limit``
    (e.g. ``"256MB"``) caps DuckDB's memory; beyond it, it spills to ``<db>.tmp`` beside the database."""
    db_path = Path(db_path)
    if read_only and not db_path.exists():
        raise FileNotFoundError(f"warehouse {db_path} does not exist yet: load some raw data first")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with warehouse_lock(db_path, exclusive=not read_only, timeout_s=timeout_s):
        con = duckdb.connect(str(db_path), read_only=read_only)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if memory_limit is not None:
                con.execute(f"SET memory_limit = '{memory_limit}'")
            yield con
        finally:
            con.close()


@contextlib.contextmanager
def connect_held(db_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection for a caller that already holds the warehouse's exclusive lock
    (:func:`warehouse_lock`), e.g. around a dbt build it runs in between."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_columns(contract: TableContract) -> list[str]:
    """The columns of the contract's warehouse table, in order: the contract's, the partition day, the lineage."""
    return ([c.name for c in contract.columns] + ([PARTITION_COLUMN] if contract.partitioning is not None else [])
            + list(LINEAGE_COLUMNS))


def table_ddl(contract: TableContract) -> str:
    cols = [f"{_q(c.name)} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in contract.columns]
    if contract.partitioning is not None:
        cols.append(f"{PARTITION_COLUMN} DATE NOT NULL")
    cols += [f"{name} {typ} NOT NULL" for name, typ in LINEAGE_COLUMNS.items()]
    return f"CREATE TABLE IF NOT EXISTS {contract.qualified_name} ({', '.join(cols)})"


def ensure_tables(con: duckdb.DuckDBPyConnection, contract: TableContract) -> None:
    """The contract's raw table, the load log and the load history, created where missing."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {contract.source}")
    con.execute(table_ddl(contract))
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (table_name VARCHAR, partition_key VARCHAR, rows BIGINT, "
        "checksum VARCHAR, source_file VARCHAR, file_sha256 VARCHAR, schema_version VARCHAR, run_id VARCHAR, "
        "loaded_at TIMESTAMPTZ, published_at TIMESTAMPTZ, final_at TIMESTAMPTZ, "
        "PRIMARY KEY (table_name, partition_key))"
    )
    # warehouses created before the time model recorded publication times
    for column in ("published_at", "final_at"):
        con.execute(f"ALTER TABLE {LOADS_TABLE} ADD COLUMN IF NOT EXISTS {column} TIMESTAMPTZ")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {LOAD_HISTORY_TABLE} (table_name VARCHAR, partition_key VARCHAR, rows BIGINT, "
        "checksum VARCHAR, source_file VARCHAR, file_sha256 VARCHAR, archived_path VARCHAR, schema_version VARCHAR, "
        "run_id VARCHAR, loaded_at TIMESTAMPTZ, published_at TIMESTAMPTZ, final_at TIMESTAMPTZ)"
    )


@dataclass(frozen=True)
class LoadResult:
    table: str
    partition_key: str
    rows: int
    checksum: str
    rows_replaced: int
    published_at: dt.datetime | None = None
    final_at: dt.datetime | None = None


def load_batch(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    rows_path: Path,
    *,
    partition: dt.date | None,
    source_file: Path,
    file_sha256: str,
    run_id: str = "",
    published_at: dt.datetime | None = None,
    final_at: dt.datetime | None = None,
    archived_path: Path | None = None,
    checksum: str | None = None,
    ensured: bool = False,
) -> LoadResult:
    """Replace one partition (or the whole reference table) with the rows of ``rows_path`` (Parquet, typed by the
    contract; read as a stream) in a single transaction, and record the load in the load log (the version each
    partition holds now) and in the append-only load history (every version ever loaded, with ``archived_path``,
    where its bytes are kept), with when the batch was published and from when its values are final (the time
    model). ``loaded_at`` is this process's clock (the one the run records, registry and SLIs use), not DuckDB's.
    ``checksum``: the rows' :func:`incoming_checksum`, computed beforehand (e.g. as the batch was validated); it is
    the partition's :func:`content_checksum` once loaded, so it is recorded as such when the table has the
    contract's columns in order (else the checksum is computed from the table). ``ensured``: the caller has
    already run :func:`ensure_tables` for ``contract`` on ``con`` (a backfill loading many partitions)."""
    if not ensured:
        ensure_tables(con, contract)
    loaded_at = dt.datetime.now(dt.UTC)
    target = contract.qualified_name
    cols = contract.column_names
    where = f"{PARTITION_COLUMN} = DATE '{partition.isoformat()}'" if partition is not None else "true"
    partition_key = partition.isoformat() if partition is not None else "__all__"
    extra_vals = ([f"DATE '{partition.isoformat()}'"] if partition is not None else []) + ["?", "?"]
    extra_cols = ([PARTITION_COLUMN] if partition is not None else []) + list(LINEAGE_COLUMNS)
    con.execute("CREATE OR REPLACE TEMP VIEW _incoming_batch AS SELECT * FROM read_parquet('"
                + str(rows_path).replace("'", "''") + "')")
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            # DELETE and INSERT return how many rows they removed and added: the partition's rows before and after
            replaced = con.execute(f"DELETE FROM {target} WHERE {where}").fetchall()[0][0]
            rows = con.execute(
                f"INSERT INTO {target} ({', '.join(_q(c) for c in cols + extra_cols)}) "
                f"SELECT {', '.join(_q(c) for c in cols)}, {', '.join(extra_vals)} FROM _incoming_batch",
                [source_file.name, file_sha256],
            ).fetchall()[0][0]
            if checksum is None or [d[0] for d in con.execute(f"SELECT * FROM {target} LIMIT 0").description] \
                    != table_columns(contract):
                checksum = content_checksum(con, contract, partition)
            con.execute(
                f"INSERT OR REPLACE INTO {LOADS_TABLE} (table_name, partition_key, rows, checksum, source_file, "
                "file_sha256, schema_version, run_id, loaded_at, published_at, final_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [target, partition_key, rows, checksum, str(source_file), file_sha256, contract.schema_version, run_id,
                 loaded_at, published_at, final_at],
            )
            con.execute(
                f"INSERT INTO {LOAD_HISTORY_TABLE} (table_name, partition_key, rows, checksum, source_file, "
                "file_sha256, archived_path, schema_version, run_id, loaded_at, published_at, final_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [target, partition_key, rows, checksum, str(source_file), file_sha256,
                 str(archived_path) if archived_path else None, contract.schema_version, run_id, loaded_at,
                 published_at, final_at],
            )
            faults.point("ingest.before_commit")
            con.execute("COMMIT")
            faults.point("ingest.after_commit", f"{target}:{partition_key}")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DROP VIEW IF EXISTS _incoming_batch")
    return LoadResult(target, partition_key, rows, checksum, replaced, published_at, final_at)


def content_checksum(con: duckdb.DuckDBPyConnection, contract: TableContract, partition: dt.date | None = None) -> str:
    """sha256 of the rows (all columns, lineage included) in key order, serialized as CSV: equal content,
    equal checksum, independent of physical row order or file layout."""
    where = f"WHERE {PARTITION_COLUMN} = DATE '{partition.isoformat()}'" if partition is not None else ""
    return _rows_checksum(con, f"SELECT * FROM {contract.qualified_name} {where} ORDER BY {_checksum_order(contract)}")


def incoming_checksum(rows_path: Path, contract: TableContract, partition: dt.date | None, source_file_name: str,
                      file_sha256: str) -> str:
    """The :func:`content_checksum` that the validated rows in ``rows_path`` (Parquet: the contract's columns and
    types, rows in key order, keys unique) will have once :func:`load_batch` has loaded them as ``partition`` from
    ``source_file_name`` with ``file_sha256``: the same rows in the same order, with the partition and lineage
    columns added, serialized the same way; streamed row group by row group."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(rows_path)
    names = [c.name for c in contract.columns]
    added = ([(PARTITION_COLUMN, pa.scalar(partition, pa.date32()))] if contract.partitioning is not None else []) + [
        (name, pa.scalar(value, pa.string())) for name, value in zip(LINEAGE_COLUMNS, (source_file_name, file_sha256))]
    schema = pa.schema([rows.schema_arrow.field(n) for n in names] + [pa.field(n, v.type) for n, v in added])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in rows.iter_batches(batch_size=CHECKSUM_BATCH_ROWS, columns=names):
            yield pa.record_batch([batch.column(n) for n in names] + [pa.repeat(v, batch.num_rows) for _, v in added],
                                  schema=schema)

    return _csv_sha256(schema, batches())


def _checksum_order(contract: TableContract) -> str:
    order = ", ".join(_q(k) for k in contract.key)
    return f"{PARTITION_COLUMN}, {order}" if contract.partitioning is not None else order


def _rows_checksum(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """sha256 of ``query``'s rows serialized as CSV (header included), streamed (constant memory)."""
    reader = con.sql(query).to_arrow_reader(CHECKSUM_BATCH_ROWS)
    return _csv_sha256(reader.schema, reader)


def _csv_sha256(schema: pa.Schema, batches) -> str:
    sink = _HashingSink()
    with pacsv.CSVWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.hash.hexdigest()


class _HashingSink(io.RawIOBase):
    """A write-only file that hashes what is written to it (constant memory)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.hash.update(b)
        return len(b)


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table],
    ).fetchall()[0][0])


def newest_publication(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """The 'now' of the loaded data: when the newest loaded batch was published (the load log's ``published_at``).
    On a replay that is the replayed instant; live, the latest upstream publication."""
    if not table_exists(con, *LOADS_TABLE.split(".")):
        return None
    (at,) = con.execute(f"SELECT max(published_at) FROM {LOADS_TABLE}").fetchall()[0]
    return at.astimezone(dt.UTC) if at is not None else None


def loaded_partitions(con: duckdb.DuckDBPyConnection, contract: TableContract) -> list[str]:
    if not table_exists(con, contract.source, contract.table) or contract.partitioning is None:
        return []
    rows = con.execute(
        f"SELECT DISTINCT CAST({PARTITION_COLUMN} AS VARCHAR) FROM {contract.qualified_name} ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
