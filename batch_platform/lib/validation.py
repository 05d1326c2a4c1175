"""Validate one landed batch file against its :class:`~batch_platform.lib.contracts.TableContract`.

Validation runs in a private in-memory DuckDB connection, so a bad batch never reaches the warehouse. Every
violation raises a subclass of :class:`BatchRejected` naming the file, the rule, how many rows broke it and a
few example keys. A good batch comes back as a Parquet file of its rows typed by the contract, in a working folder
of its own (:class:`ValidatedBatch`).

Memory stays bounded whatever the size of the batch: the file is copied and hashed a chunk at a time, and DuckDB,
capped at :data:`MEMORY_LIMIT`, spills to the batch's working folder beyond it; the rows are never held in Python.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.lib import warehouse
from batch_platform.lib.contracts import NULL_LIKE, TableContract

MAX_EXAMPLES = 5
MEMORY_LIMIT = "256MB"
"""DuckDB's memory cap for validating one batch, and for loading it (:mod:`batch_platform.lib.ingest`); beyond it
DuckDB spills to disk."""
MAX_THREADS = 4
"""Threads of one validation at most: the CSV reader holds a buffer of :data:`CSV_BUFFER_BYTES` per thread, all
within the cap."""
CSV_BUFFER_BYTES = 4 << 20
PARQUET_ROW_GROUP_ROWS = 16_384  # the typed rows are written, and read back by the load, this many at a time


class BatchRejected(Exception):
    """A landed batch broke its contract. Subclasses name the rule."""

    rule = "batch_rejected"

    def __init__(self, path: Path | str, detail: str, *, rows: int | None = None, examples: list | None = None):
        self.path = str(path)
        self.detail = detail
        self.rows = rows
        self.examples = list(examples or [])[:MAX_EXAMPLES]
        self.quarantined_to: str | None = None
        rows_txt = f"; {rows} row(s)" if rows is not None else ""
        ex_txt = f"; e.g. {self.examples}" if self.examples else ""
        super().__init__(f"{type(self).__name__} [{self.rule}] in {self.path}: {detail}{rows_txt}{ex_txt}")

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "rule": self.rule,
            "file": self.path,
            "detail": self.detail,
            "rows": self.rows,
            "examples": [str(e) for e in self.examples],
            "quarantined_to": self.quarantined_to,
        }


class MissingBatchError(BatchRejected):
    rule = "batch_present"


class ExportNotFinishedError(BatchRejected):
    """The file is there but its manifest (written after the file) is not: upstream is still exporting. Not bad,
    not ready: it stays landed (not quarantined) and loads once the manifest arrives."""

    rule = "export_finished"


class NotYetPublishedError(BatchRejected):
    """The manifest says the batch is published later than now: not loaded (and not quarantined) until then."""

    rule = "published"


class EmptyBatchError(BatchRejected):
    rule = "not_empty"


class CorruptBatchError(BatchRejected):
    rule = "parseable"


class ChecksumMismatchError(CorruptBatchError):
    rule = "manifest_matches"


class ManifestError(CorruptBatchError):
    """The manifest beside the file does not vouch for it: a required field is missing or malformed, or it
    describes another table or partition."""

    rule = "manifest_valid"


class EncodingError(CorruptBatchError):
    """Not plain UTF-8 text as the landing format requires (a byte-order mark, another encoding)."""

    rule = "utf8_text"


class MissingColumnError(BatchRejected):
    rule = "columns_present"


class UnexpectedColumnError(BatchRejected):
    rule = "no_unexpected_columns"


class ColumnTypeError(BatchRejected):
    rule = "column_types"


class NullKeyError(BatchRejected):
    rule = "key_not_null"


class NullValueError(BatchRejected):
    rule = "not_null"


class DuplicateKeyError(BatchRejected):
    rule = "key_unique"


class OutsidePartitionError(BatchRejected):
    rule = "within_partition_day"


class ImpossibleValueError(BatchRejected):
    rule = "physical_range"


class RowRuleViolation(BatchRejected):
    rule = "row_rule"


class UnknownReferenceError(BatchRejected):
    """Codes missing from their reference table as loaded (a carrier not in ``airlines``, an airport not in
    ``airports``): rejected at ingest, before the partition (and the labels built from it) change."""

    rule = "known_reference"


class UndeclaredNullTokenError(BatchRejected):
    """A field holds a null-like text (``NULL``, ``None``, ``NaN``…) the contract does not declare as null: it would
    be stored as a value (a tail number ``NULL``, a NaN temperature)."""

    rule = "declared_null_tokens"


class _WorkFolder:
    """A folder of working files, removed by :meth:`remove` or, at the latest, when the object is collected."""

    def __init__(self, parent: Path | None):
        self.path = Path(tempfile.mkdtemp(prefix=".validating-", dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def remove(self) -> None:
        self._finalizer()


@dataclass
class ValidatedBatch:
    contract: TableContract
    path: Path
    file_sha256: str
    rows_path: Path
    """The typed rows in key order (Parquet), in the batch's working folder until :meth:`close`."""
    row_count: int
    nulled_out_of_range: dict[str, int] = field(default_factory=dict)
    published_at: dt.datetime | None = None
    """When the upstream published the batch, as its manifest states (``None``: the manifest does not say)."""
    archived_path: Path | None = None
    """The validated bytes, kept as ``<archive_dir>/<sha256>.csv`` (when validation was asked to keep them)."""
    checksum: str | None = None
    """The content checksum the rows will have once loaded (``warehouse.incoming_checksum``), computed here, off
    the loading thread."""
    work: _WorkFolder | None = field(default=None, repr=False, compare=False)

    @property
    def data(self) -> pa.Table:
        """The typed rows read into memory, for a look at a small batch; loading reads :attr:`rows_path`."""
        return pq.read_table(self.rows_path)

    def close(self) -> None:
        """Remove the working files (the rows are gone; the archived bytes stay)."""
        if self.work is not None:
            self.work.remove()

    def __enter__(self) -> ValidatedBatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class _Checker:
    def __init__(self, con: duckdb.DuckDBPyConnection, contract: TableContract, path: Path, table: str):
        self.con, self.contract, self.path, self.table = con, contract, path, table
        self.key_expr = ", ".join(_q(k) for k in contract.key)

    def violations(self, predicate: str, exc: type[BatchRejected], detail: str, count: int | None = None) -> None:
        """Raise ``exc`` if any row satisfies ``predicate``, with the count and example keys (``count``: the rows
        satisfying it, when a scan counted them already)."""
        if count is None:
            count = self.con.execute(f"SELECT count(*) FROM {self.table} WHERE {predicate}").fetchall()[0][0]
        if count:
            examples = self.con.execute(
                f"SELECT {self.key_expr} FROM {self.table} WHERE {predicate} ORDER BY {self.key_expr} LIMIT {MAX_EXAMPLES}"
            ).fetchall()
            raise exc(self.path, detail, rows=count, examples=examples)


INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT"}


def _uncastable(column: str, sql_type: str) -> str:
    """SQL true when a text value does not hold a value of ``sql_type``: DuckDB's cast also rounds a fraction to an
    integer (``4000.7`` → 4001), so an integer column takes digits only."""
    cast_fails = f"TRY_CAST({_q(column)} AS {sql_type}) IS NULL"
    if sql_type.upper() in INTEGER_TYPES:
        return f"{cast_fails} OR NOT regexp_full_match(trim({_q(column)}), '[+-]?[0-9]+')"
    return cast_fails


def _counts(con: duckdb.DuckDBPyConnection, table: str, predicates: dict) -> dict:
    """Rows satisfying each predicate, all counted in one scan of ``table``."""
    if not predicates:
        return {}
    exprs = ", ".join(f"count_if({p})" for p in predicates.values())
    return dict(zip(predicates, con.execute(f"SELECT {exprs} FROM {table}").fetchall()[0]))


def _csv_error_detail(message: str) -> str:
    """DuckDB's CSV error without its advice and reader settings: the line number, the original line and what is
    wrong with it, one line each (advice to relax the parser does not apply, and the settings name the private
    copy, not the landed file)."""
    kept = []
    for line in message.removeprefix("Invalid Input Error: ").splitlines():
        if line.startswith("Possible ") or line.startswith("  file = "):
            break
        if line.strip():
            kept.append(line)
    return "\n".join(kept)


def _read_header(path: Path, shown: Path) -> list[str]:
    """The CSV header of ``path`` (errors name ``shown``, the landed file ``path`` is a copy of)."""
    with open(path, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise EncodingError(shown, "the file starts with a UTF-8 byte-order mark (BOM): export UTF-8 without one")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError as e:
        raise EncodingError(shown, f"not UTF-8 text: {e}") from e
    except csv.Error as e:
        raise CorruptBatchError(shown, f"unreadable CSV header: {e}") from e
    if not header:
        raise EmptyBatchError(shown, "no header line")
    return [h.strip() for h in header]


def _parquet_header(con: duckdb.DuckDBPyConnection, path: Path, shown: Path) -> list[str]:
    """The column names of the Parquet file ``path`` (errors name ``shown``)."""
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(path)})").fetchall()
    except duckdb.Error as e:
        raise CorruptBatchError(shown, f"cannot read as Parquet: {str(e).splitlines()[0]}") from e
    if not described:
        raise EmptyBatchError(shown, "no columns")
    return [row[0] for row in described]


def _private_copy(path: Path, folder: Path) -> tuple[Path, str]:
    """Copy ``path`` into ``folder`` in bounded chunks, hashing the bytes as they are copied: what is validated,
    loaded and recorded is one read of the file, even if upstream replaces it meanwhile."""
    copy = folder / f".incoming-{uuid.uuid4().hex}{path.suffix}"
    h = hashlib.sha256()
    with open(path, "rb") as src, open(copy, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            dst.write(chunk)
    return copy, h.hexdigest()


def check_manifest(path: Path, manifest: dict, contract: TableContract, partition: dt.date | None,
                   sha: str) -> None:
    """The manifest must vouch for these bytes: ``sha256`` (64 hex digits) equal to theirs, ``rows`` a
    non-negative integer, ``table`` this contract's and ``partition`` this partition (``null`` for a snapshot)."""
    if not isinstance(manifest, dict):
        raise ManifestError(path, f"manifest is not a JSON object: {manifest!r}"[:300])
    missing = [k for k in ("table", "partition", "rows", "sha256") if k not in manifest]
    if missing:
        raise ManifestError(path, f"manifest lacks required field(s) {missing}")
    digest = manifest["sha256"]
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest.lower())):
        raise ManifestError(path, f"manifest sha256 {digest!r} is not a sha256 hex digest")
    rows = manifest["rows"]
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ManifestError(path, f"manifest rows {rows!r} is not a non-negative integer")
    if manifest["table"] != contract.table:
        raise ManifestError(path, f"manifest describes table {manifest['table']!r}, not {contract.table!r}")
    expected = partition.isoformat() if partition is not None else None
    if manifest["partition"] != expected:
        raise ManifestError(path, f"manifest describes partition {manifest['partition']!r}, not {expected!r}")
    if digest.lower() != sha:
        raise ChecksumMismatchError(
            path, f"file sha256 {sha[:12]}… differs from the manifest's {digest[:12]}…: truncated or modified "
            "after export")


def read_manifest(path: Path) -> dict | None:
    mpath = Path(str(path) + ".manifest.json")
    if not mpath.exists():
        return None
    try:
        return json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptBatchError(path, f"unreadable manifest {mpath.name}: {e}") from e


def manifest_published_at(path: Path, manifest: dict | None) -> dt.datetime | None:
    """The manifest's ``published_at`` (ISO 8601 with an offset or ``Z``) as a UTC instant."""
    raw = (manifest or {}).get("published_at")
    if raw is None:
        return None
    try:
        at = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as e:
        raise CorruptBatchError(path, f"manifest published_at {raw!r} is not an ISO 8601 instant") from e
    if at.tzinfo is None:
        raise CorruptBatchError(path, f"manifest published_at {raw!r} has no UTC offset")
    return at.astimezone(dt.UTC)


def validate_batch(
    path: Path | str,
    contract: TableContract,
    partition: dt.date | None = None,
    *,
    require_manifest: bool = True,
    archive_dir: Path | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> ValidatedBatch:
    """Validate ``path`` against ``contract`` (and ``partition`` for daily tables); raise a named
    :class:`BatchRejected` or return the typed rows (in a working folder, inside ``archive_dir`` when given,
    removed by :meth:`ValidatedBatch.close`). ``archive_dir``: keep the validated bytes there as ``<sha256>.csv``
    (content-addressed: a version seen before is kept once). ``memory_limit``: DuckDB's cap (it spills to the
    working folder beyond it)."""
    path = Path(path)
    if not path.exists():
        raise MissingBatchError(path, "no batch file landed for this partition")
    if path.stat().st_size == 0:
        raise EmptyBatchError(path, "file is empty (0 bytes)")
    if contract.partitioning is not None and partition is None:
        raise ValueError(f"{contract.qualified_name} is daily-partitioned: pass the partition date")

    manifest = read_manifest(path)
    if manifest is None and require_manifest:
        raise ExportNotFinishedError(path, "no manifest beside the file yet: the export has not finished; it loads "
                                     "once the manifest is written")
    if archive_dir is not None:
        Path(archive_dir).mkdir(parents=True, exist_ok=True)
    work = _WorkFolder(archive_dir)
    try:
        # the private copy is renamed into the archive, so it is made there (or among the working files)
        folder = Path(archive_dir) if archive_dir is not None else work.path
        copy, sha = _private_copy(path, folder)
        try:
            if manifest is not None:
                check_manifest(path, manifest, contract, partition, sha)
            published_at = manifest_published_at(path, manifest)
            rows_path, n, nulled, checksum = _validate_rows(copy, path, contract, partition, manifest, work.path,
                                                             memory_limit, sha)
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        archived = None
        if archive_dir is not None:
            archived = folder / f"{sha}{contract.extension}"
            os.replace(copy, archived)  # same bytes under the same name when this version was seen before
    except BaseException:
        work.remove()
        raise
    return ValidatedBatch(contract=contract, path=path, file_sha256=sha, rows_path=rows_path, row_count=n,
                          nulled_out_of_range=nulled, published_at=published_at, archived_path=archived,
                          checksum=checksum, work=work)


def _validate_rows(copy: Path, path: Path, contract: TableContract, partition: dt.date | None,
                   manifest: dict | None, work: Path, memory_limit: str,
                   file_sha256: str) -> tuple[Path, int, dict[str, int], str]:
    """The contract's checks on the bytes in ``copy`` (errors name the landed ``path``); the typed rows go to
    ``work``/rows.parquet (returned with their count, the values nulled per column and the content checksum they
    will have once loaded), DuckDB's spill files to ``work`` too."""
    with _scratch_session(work, memory_limit) as con:
        header = (_parquet_header(con, copy, path) if contract.file_format == "parquet"
                  else _read_header(copy, path))
        rows_path, n, nulled = _check_rows(con, header, copy, path, contract, partition, manifest, work)
    # from the rows file (written in key order), off the loading thread
    checksum = warehouse.incoming_checksum(rows_path, contract, partition, path.name, file_sha256)
    return rows_path, n, nulled, checksum


_SCRATCH = threading.local()
"""Per thread: the in-memory DuckDB database its batches are checked in (``db``)."""


def _scratch_settings(con: duckdb.DuckDBPyConnection, work: Path, memory_limit: str) -> None:
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {min(MAX_THREADS, os.cpu_count() or 1)}")
    con.execute(f"SET temp_directory = {_lit(work / 'duckdb.tmp')}")  # spills go beside the batch's working files
    con.execute("SET preserve_insertion_order = false")  # every result below that has an order says so


@contextlib.contextmanager
def _scratch_session(work: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB session for one batch's checks: a cursor on this thread's in-memory database (opening a database
    costs ~20 ms, a cursor well under one: a backfill checks hundreds of batches), with the batch's memory cap and
    spill folder. The cursor's temporary tables are its own and go with it. A database that cannot take the new
    spill folder (it spilled into the last one), or whose session failed, is closed and a fresh one used."""
    db = getattr(_SCRATCH, "db", None)
    con = None
    try:
        if db is not None:
            try:
                con = db.cursor()
                _scratch_settings(con, work, memory_limit)
            except duckdb.Error:
                con = None
                _discard_scratch()
        if con is None:
            _SCRATCH.db = duckdb.connect()
            con = _SCRATCH.db.cursor()
            _scratch_settings(con, work, memory_limit)
        yield con
    except BaseException:
        if con is not None:
            con.close()
            con = None
        _discard_scratch()
        raise
    finally:
        if con is not None:
            con.close()


def _discard_scratch() -> None:
    db, _SCRATCH.db = getattr(_SCRATCH, "db", None), None
    if db is not None:
        db.close()


def _check_rows(con: duckdb.DuckDBPyConnection, header: list[str], copy: Path, path: Path, contract: TableContract,
                partition: dt.date | None, manifest: dict | None, work: Path) -> tuple[Path, int, dict[str, int]]:
    expected = contract.column_names
    missing = [c for c in expected if c not in header]
    if missing:
        raise MissingColumnError(path, f"missing column(s) {missing}; header has {header}")
    unexpected = [c for c in header if c not in expected]
    if unexpected:
        raise UnexpectedColumnError(path, f"column(s) {unexpected} are not in contract {contract.schema_version}")
    if len(set(header)) != len(header):
        raise CorruptBatchError(path, f"repeated column names in header {header}")

    tokens = contract.null_tokens
    if contract.file_format == "parquet":
        # typed in the file: every value as its text, then the same checks as a CSV's (a declared null token
        # in a text column means null, as in a CSV; the casts back check the declared types)
        token_list = ", ".join(_str(t) for t in tokens) or "NULL"
        texts = ", ".join(f"CASE WHEN CAST({_q(h)} AS VARCHAR) IN ({token_list}) THEN NULL "
                          f"ELSE CAST({_q(h)} AS VARCHAR) END AS {_q(h)}" for h in header)
        try:
            con.execute(f"CREATE TEMP TABLE text_rows AS SELECT {texts} FROM read_parquet({_lit(copy)})")
        except duckdb.InvalidInputException as e:
            raise CorruptBatchError(path, f"cannot read as Parquet: {str(e).splitlines()[0]}") from e
    else:
        columns = "{" + ", ".join(f"{_lit(Path(h))}: 'VARCHAR'" for h in header) + "}"
        try:
            con.execute(
                f"CREATE TEMP TABLE text_rows AS SELECT * FROM read_csv({_lit(copy)}, header = true, "
                f"columns = {columns}, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
                f"strict_mode = true, null_padding = false, nullstr = [{', '.join(_str(t) for t in tokens)}], "
                f"buffer_size = {CSV_BUFFER_BYTES})"
            )
        except duckdb.InvalidInputException as e:  # the file's fault (not, say, out of memory)
            raise CorruptBatchError(path, f"cannot parse as CSV: {_csv_error_detail(str(e))}") from e

    n = con.execute("SELECT count(*) FROM text_rows").fetchall()[0][0]
    if n == 0:
        raise EmptyBatchError(path, "header only, no rows")
    if manifest is not None and manifest.get("rows") is not None and int(manifest["rows"]) != n:
        raise ChecksumMismatchError(path, f"{n} rows parsed but the manifest says {manifest['rows']}", rows=n)

    # The text checks, all counted in one scan: undeclared null-like tokens, then values that do not cast to the
    # declared type. The detail queries run only for a column that has some (the first one raises).
    undeclared = [t for t in NULL_LIKE if t not in tokens]
    in_list = ", ".join(_str(t) for t in undeclared)
    suspicious = {col.name: f"trim({_q(col.name)}) IN ({in_list})" for col in contract.columns} if undeclared else {}
    uncastable_by_col = {col.name: f"{_q(col.name)} IS NOT NULL AND ({_uncastable(col.name, col.type)})"
                         for col in contract.columns}
    found = _counts(con, "text_rows", {**{("null-like", c): p for c, p in suspicious.items()},
                                       **{("uncastable", c): p for c, p in uncastable_by_col.items()}})
    text = _Checker(con, contract, path, "text_rows")
    for name, predicate in suspicious.items():
        if found["null-like", name]:
            values = [r[0] for r in con.execute(
                f"SELECT DISTINCT {_q(name)} FROM text_rows WHERE {predicate} ORDER BY 1 "
                f"LIMIT {MAX_EXAMPLES}").fetchall()]
            text.violations(predicate, UndeclaredNullTokenError,
                            f"column {name!r} holds {values}, not declared null tokens of this table "
                            f"({list(tokens)}): a value or a missing one?", count=found["null-like", name])
    for col in contract.columns:
        if not found["uncastable", col.name]:
            continue
        uncastable = uncastable_by_col[col.name]
        values = [r[0] for r in con.execute(
            f"SELECT DISTINCT {_q(col.name)} FROM text_rows WHERE {uncastable} ORDER BY 1 LIMIT {MAX_EXAMPLES}"
        ).fetchall()]
        if values:
            text.violations(uncastable, ColumnTypeError,
                            f"column {col.name!r} must be {col.type}; uncastable values {values}",
                            count=found["uncastable", col.name])

    select = ", ".join(f"CAST({_q(c.name)} AS {c.type}) AS {_q(c.name)}" for c in contract.columns)
    con.execute(f"CREATE TEMP TABLE typed AS SELECT {select} FROM text_rows")
    typed = _Checker(con, contract, path, "typed")

    # The typed checks, counted in one scan (raised in this order: nulls, duplicate keys, partition, ranges, row
    # rules); out-of-range values of a column that nulls them are nulled before the row rules are judged.
    not_null = [*contract.key, *(c.name for c in contract.columns if not c.nullable and c.name not in contract.key)]
    outside = (contract.partitioning.outside_sql(partition.isoformat(), _q)
               if contract.partitioning is not None else None)
    ranges = {}
    for col in contract.columns:
        conds = ([f"{_q(col.name)} < {col.min}"] if col.min is not None else []) + (
            [f"{_q(col.name)} > {col.max}"] if col.max is not None else [])
        if conds:
            ranges[col.name] = "(" + " OR ".join(conds) + ")"
    rules = {r.name: f"NOT coalesce(({r.sql}), true)" for r in contract.row_rules}
    counted = _counts(con, "typed", {**{("null", c): f"{_q(c)} IS NULL" for c in not_null},
                                     **({("outside",): outside} if outside is not None else {}),
                                     **{("range", c): p for c, p in ranges.items()},
                                     **{("rule", r): p for r, p in rules.items()}})
    for k in contract.key:
        if counted["null", k]:
            typed.violations(f"{_q(k)} IS NULL", NullKeyError, f"key column {k!r} is null", count=counted["null", k])
    for col in contract.columns:
        if not col.nullable and col.name not in contract.key and counted["null", col.name]:
            typed.violations(f"{_q(col.name)} IS NULL", NullValueError, f"column {col.name!r} must not be null",
                             count=counted["null", col.name])

    dup = con.execute(
        f"SELECT count(*), sum(n) FROM (SELECT count(*) AS n FROM typed GROUP BY {typed.key_expr} HAVING n > 1)"
    ).fetchall()[0]
    if dup[0]:
        examples = con.execute(
            f"SELECT {typed.key_expr} FROM typed GROUP BY {typed.key_expr} HAVING count(*) > 1 "
            f"ORDER BY {typed.key_expr} LIMIT {MAX_EXAMPLES}"
        ).fetchall()
        raise DuplicateKeyError(path, f"{dup[0]} key(s) {list(contract.key)} appear more than once",
                                rows=int(dup[1]), examples=examples)

    if outside is not None:
        typed.violations(outside, OutsidePartitionError,
                         f"rows dated outside partition day {partition.isoformat()} ({contract.partitioning.timezone})",
                         count=counted["outside",])

    nulled: dict[str, int] = {}
    for col in contract.columns:
        if col.name not in ranges:
            continue
        pred, cnt = ranges[col.name], counted["range", col.name]
        if col.on_out_of_range == "null":
            if cnt:
                con.execute(f"UPDATE typed SET {_q(col.name)} = NULL WHERE {pred}")
                nulled[col.name] = int(cnt)
        else:
            typed.violations(pred, ImpossibleValueError,
                             f"column {col.name!r} outside physical range [{col.min}, {col.max}]", count=cnt)

    broken = (_counts(con, "typed", rules) if nulled  # the rules judge the nulled values
              else {r: counted["rule", r] for r in rules})
    for rule in contract.row_rules:
        if broken[rule.name]:
            typed.violations(f"NOT coalesce(({rule.sql}), true)", RowRuleViolation,
                             f"rule {rule.name!r} broken: {rule.description}", count=broken[rule.name])

    order = ", ".join(_q(k) for k in contract.key)
    rows_path = work / "rows.parquet"
    con.execute(f"COPY (SELECT * FROM typed ORDER BY {order}) TO {_lit(rows_path)} "
                f"(FORMAT parquet, ROW_GROUP_SIZE {PARQUET_ROW_GROUP_ROWS})")
    return rows_path, n, nulled
