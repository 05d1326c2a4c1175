"""Ingest one landed batch: validate, quarantine on rejection, otherwise replace its partition atomically; and
which daily batches a range of days brings (:func:`daily_batches`)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from batch_platform.lib import warehouse
from batch_platform.lib.clock import REPLAY_CLOCK, DataClock
from batch_platform.lib.contracts import DAILY_CONTRACTS, TableContract
from batch_platform.lib.time_model import TimeModel, load_time_model
from batch_platform.lib.validation import (
    MEMORY_LIMIT,
    BatchRejected,
    ExportNotFinishedError,
    MissingBatchError,
    NotYetPublishedError,
    UnknownReferenceError,
    ValidatedBatch,
    validate_batch,
)

NOT_QUARANTINED = (MissingBatchError, ExportNotFinishedError, NotYetPublishedError)
"""Rejections that are no fault of the file: nothing landed yet, an export still being written (no manifest yet),
or landed ahead of its publication time. The file stays landed for a later attempt."""


@dataclass(frozen=True)
class BatchTimes:
    published_at: dt.datetime
    final_at: dt.datetime


def batch_times(batch: ValidatedBatch, partition: dt.date | None, *, time_model: TimeModel | None = None,
                clock: DataClock = REPLAY_CLOCK, now: dt.datetime | None = None) -> BatchTimes:
    """When ``batch`` was published (its manifest's ``published_at``; a manifest that does not say is taken to be
    published on the time model's schedule) and from when its values are final (the time model, never before it was
    published). A batch published after ``now`` (default: the wall clock) is not loaded: that would let features
    use data before it exists (:class:`NotYetPublishedError`)."""
    tm = time_model or load_time_model()
    table = batch.contract.table
    day = partition if partition is not None else clock.first_day
    published = batch.published_at or tm.published_at(table, day, batch.contract)
    now = now or dt.datetime.now(dt.UTC)
    if published > now:
        raise NotYetPublishedError(batch.path, f"published at {published.isoformat()} by its manifest, after now "
                                   f"({now.isoformat()}): load it once published")
    return BatchTimes(published, tm.final_at(table, day, published, batch.contract))


def _times_or_close(batch: ValidatedBatch, partition: dt.date | None, clock: DataClock,
                    now: dt.datetime | None) -> BatchTimes:
    """:func:`batch_times`; a batch not loaded for them has its working files removed."""
    try:
        return batch_times(batch, partition, clock=clock, now=now)
    except BaseException:
        batch.close()
        raise


@dataclass(frozen=True)
class IngestResult:
    batch: ValidatedBatch
    load: warehouse.LoadResult
    references_unchecked: tuple[str, ...] = ()
    """Reference tables not loaded yet when the batch was (their codes are checked by dbt's tests later)."""


def quarantine(path: Path, error: BatchRejected, quarantine_dir: Path, *, run_id: str = "") -> Path:
    """Move a rejected batch (and its manifest) out of the landing zone, with the reason beside it.

    Returns the quarantined file's path. Names are prefixed with a UTC timestamp so a batch rejected twice
    keeps both copies."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest_dir = quarantine_dir / error_table_dir(path)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{stamp}__{path.name}"
    reason = {**error.to_dict(), "quarantined_at": stamp, "run_id": run_id, "original_path": str(path)}
    reason_path = Path(str(dest) + ".reason.json")
    reason_path.write_text(json.dumps(reason, indent=2, default=str) + "\n")
    shutil.move(path, dest)
    manifest = Path(str(path) + ".manifest.json")
    if manifest.exists():
        shutil.move(manifest, Path(str(dest) + ".manifest.json"))
    return dest


def error_table_dir(path: Path) -> str:
    # landing layout is <landing>/<table>/<file>: keep the table folder in quarantine too
    return path.parent.name


def ingest_batch(
    db_path: Path,
    contract: TableContract,
    path: Path,
    partition: dt.date | None,
    *,
    quarantine_dir: Path,
    archive_dir: Path | None = None,
    run_id: str = "",
    require_manifest: bool = True,
    lock_timeout_s: float = 600.0,
    clock: DataClock = REPLAY_CLOCK,
    now: dt.datetime | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> IngestResult:
    """Validate ``path``; on a contract violation move it to quarantine and re-raise (the warehouse is not
    opened); otherwise replace the partition in one transaction, recording when the batch was published and final
    (:func:`batch_times`; a batch not yet published raises :class:`NotYetPublishedError` and stays landed).
    ``archive_dir``: keep the loaded bytes as ``<archive_dir>/<table>/<partition>/<sha256>.csv``; every load is
    appended to the load history with the version it loaded (a correction keeps the version it replaces). Memory
    stays bounded whatever the batch's size: the rows go from the file to the warehouse through DuckDB, capped at
    ``memory_limit`` and spilling to disk beyond it (validation and load each)."""
    try:
        batch = validate_batch(path, contract, partition, require_manifest=require_manifest,
                               archive_dir=version_dir(archive_dir, contract, partition), memory_limit=memory_limit)
        times = _times_or_close(batch, partition, clock, now)
    except NOT_QUARANTINED:
        raise
    except BatchRejected as e:
        e.quarantined_to = str(quarantine(path, e, quarantine_dir, run_id=run_id))
        raise
    with batch, warehouse.connect(db_path, timeout_s=lock_timeout_s, memory_limit=memory_limit) as con:
        unchecked = _references_or_quarantine(con, batch, quarantine_dir, run_id)
        load = warehouse.load_batch(
            con, contract, batch.rows_path, partition=partition, source_file=path, file_sha256=batch.file_sha256,
            run_id=run_id, published_at=times.published_at, final_at=times.final_at,
            archived_path=batch.archived_path, checksum=batch.checksum,
        )
    return IngestResult(batch=batch, load=load, references_unchecked=tuple(unchecked))


def check_references(con, batch: ValidatedBatch) -> list[str]:
    """Raise :class:`UnknownReferenceError` when ``batch`` holds codes its contract's references do not know (the
    reference tables as loaded in the warehouse, ``con``). A reference table not loaded yet cannot vouch for
    anything: its check is skipped (the dbt relationships tests run on the feature build); returns those skipped."""
    skipped = []
    refs = batch.contract.references
    if not refs:
        return skipped
    loaded = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    checked, flagged = [], []
    for ref in refs:
        if ref.table not in loaded:
            skipped.append(ref.table)
            continue
        col = '"' + ref.column.replace('"', '""') + '"'
        predicate = (f"{col} IS NOT NULL AND {col} NOT IN "
                     f"(SELECT \"{ref.key}\" FROM raw.\"{ref.table}\" WHERE \"{ref.key}\" IS NOT NULL)")
        if ref.known_missing:  # (x NOT IN () is not SQL, and NOT IN (NULL) is never true)
            known = ", ".join("'" + c.replace("'", "''") + "'" for c in ref.known_missing)
            predicate += f" AND {col} NOT IN ({known})"
        flagged.append(f"{col} AS __code{len(checked)}, ({predicate}) AS __unknown{len(checked)}")
        checked.append(ref)
    if not checked:
        return skipped
    # every reference judged in one scan of the batch (each predicate once per row): counted first (a fraction of
    # the cost of collecting the codes, and almost every batch has none), then, when some are unknown, the codes;
    # the first reference with unknown codes raises
    rows_path = str(batch.rows_path).replace("'", "''")
    rows_from = f" FROM (SELECT {', '.join(flagged)} FROM read_parquet('{rows_path}'))"
    if not any(con.execute("SELECT " + ", ".join(f"count_if(__unknown{i})" for i in range(len(checked)))
                           + rows_from).fetchall()[0]):
        return skipped
    found = con.execute(
        "SELECT " + ", ".join(f"count_if(__unknown{i}), list(DISTINCT __code{i} ORDER BY __code{i}) "
                              f"FILTER (WHERE __unknown{i})" for i in range(len(checked))) + rows_from).fetchall()[0]
    for i, ref in enumerate(checked):
        rows, codes = found[2 * i], found[2 * i + 1]
        if rows:
            raise UnknownReferenceError(
                batch.path, f"column {ref.column!r} holds code(s) {codes[:5]} missing from raw.{ref.table}."
                f"{ref.key}", rows=rows, examples=codes[:5])
    return skipped


def _references_or_quarantine(con, batch: ValidatedBatch, quarantine_dir: Path, run_id: str) -> list[str]:
    """:func:`check_references`; a batch it rejects leaves the archive and the landing zone for quarantine."""
    try:
        return check_references(con, batch)
    except BatchRejected as e:
        _unarchive_unloaded(con, batch)
        e.quarantined_to = str(quarantine(batch.path, e, quarantine_dir, run_id=run_id))
        raise


def _unarchive_unloaded(con, batch: ValidatedBatch) -> None:
    """A version rejected after validation leaves the archive, unless an earlier load of the same bytes put it there
    (the archive keeps what was loaded)."""
    if batch.archived_path is None:
        return
    seen = con.execute(
        f"SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = "
        f"'{warehouse.LOAD_HISTORY_TABLE.split('.')[1]}'").fetchall()[0][0] and con.execute(
        f"SELECT count(*) FROM {warehouse.LOAD_HISTORY_TABLE} WHERE archived_path = ?",
        [str(batch.archived_path)]).fetchall()[0][0]
    if not seen:
        batch.archived_path.unlink(missing_ok=True)


def version_dir(archive_dir: Path | None, contract: TableContract, partition: dt.date | None) -> Path | None:
    """Where the versions of one partition's batch are kept (``None``: not kept)."""
    if archive_dir is None:
        return None
    return Path(archive_dir) / contract.table / (partition.isoformat() if partition is not None else "snapshot")


def ingest_many(
    db_path: Path,
    batches: list[tuple[TableContract, Path, dt.date | None]],
    *,
    quarantine_dir: Path,
    archive_dir: Path | None = None,
    run_id: str = "",
    require_manifest: bool = True,
    workers: int = 2,
    lock_timeout_s: float = 600.0,
    clock: DataClock = REPLAY_CLOCK,
    now: dt.datetime | None = None,
    memory_limit: str = MEMORY_LIMIT,
    on_loaded=None,
) -> list[IngestResult]:
    """Backfill: :func:`ingest_batch` for many batches, in order, faster. Validation runs ``workers`` batches
    ahead in threads (each in its own in-memory DuckDB, which releases the GIL); loads go in order over one
    warehouse connection, each partition replaced in its own transaction as :func:`ingest_batch` does. A rejected
    batch is quarantined and its error raised after every batch before it was loaded; none after it is. Each
    validation, and the loads, are capped at ``memory_limit`` (so up to ``workers + 1`` times it in all).
    ``on_loaded(result)`` is called as each batch is loaded (so a caller knows what was loaded before a rejection)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    results: list[IngestResult] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            warehouse.connect(db_path, timeout_s=lock_timeout_s, memory_limit=memory_limit) as con:
        todo = iter(batches)
        pending: deque = deque()

        def submit_next() -> None:
            item = next(todo, None)
            if item is not None:
                contract, path, partition = item
                pending.append((item, pool.submit(validate_batch, path, contract, partition,
                                                  require_manifest=require_manifest,
                                                  archive_dir=version_dir(archive_dir, contract, partition),
                                                  memory_limit=memory_limit)))

        for _ in range(2 * workers):
            submit_next()
        ensured: set[str] = set()
        while pending:
            (contract, path, partition), future = pending.popleft()
            try:
                batch = future.result()
                times = _times_or_close(batch, partition, clock, now)
            except NOT_QUARANTINED:
                raise
            except BatchRejected as e:
                e.quarantined_to = str(quarantine(path, e, quarantine_dir, run_id=run_id))
                raise
            submit_next()
            with batch:
                unchecked = _references_or_quarantine(con, batch, quarantine_dir, run_id)
                if contract.qualified_name not in ensured:
                    warehouse.ensure_tables(con, contract)
                    ensured.add(contract.qualified_name)
                load = warehouse.load_batch(con, contract, batch.rows_path, partition=partition, source_file=path,
                                            file_sha256=batch.file_sha256, run_id=run_id,
                                            published_at=times.published_at, final_at=times.final_at,
                                            archived_path=batch.archived_path, checksum=batch.checksum, ensured=True)
            results.append(IngestResult(batch=batch, load=load, references_unchecked=tuple(unchecked)))
            if on_loaded is not None:
                on_loaded(results[-1])
    return results


def lead_days(contract: TableContract) -> int:
    """How many days before its day a daily table's batch is published (a schedule, a calendar, a plan: its
    contract's ``published.day_offset`` is negative); 0 for a table published on or after its day."""
    return max(0, -contract.published.day_offset) if contract.published is not None else 0


def daily_batches(start: dt.date, end: dt.date, clock: DataClock = REPLAY_CLOCK, *,
                  schedule_through: dt.date | None = None,
                  contracts: tuple[TableContract, ...] | None = None) -> list[tuple[dt.date, tuple[TableContract, ...]]]:
    """The daily batches landed with days ``[start, end]``, per partition day in day order: every declared daily
    table (``contracts``, default :data:`DAILY_CONTRACTS`) for each day of ``start .. end``, then the tables
    published ahead of their day (:func:`lead_days`: the flight schedule, published the day before its flights)
    alone for the days after ``end`` they are already out for -- through ``end + lead``, or ``schedule_through``
    when given, never past the data set's last day on ``clock``. Empty when ``start > end``."""
    if start > end:
        return []
    contracts = DAILY_CONTRACTS if contracts is None else contracts
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    out: list[tuple[dt.date, tuple[TableContract, ...]]] = [(day, contracts) for day in days]
    ahead = [c for c in contracts if lead_days(c)]
    last = max((schedule_through if schedule_through is not None else end + dt.timedelta(days=lead_days(c))
                for c in ahead), default=end)
    day = end + dt.timedelta(days=1)
    while day <= min(last, clock.last_source_day):
        due = tuple(c for c in ahead if day <= (schedule_through if schedule_through is not None
                                                  else end + dt.timedelta(days=lead_days(c))))
        if due:
            out.append((day, due))
        day += dt.timedelta(days=1)
    return out


__all__ = ["BatchTimes", "IngestResult", "NOT_QUARANTINED", "batch_times", "daily_batches", "ingest_batch",
           "ingest_many", "lead_days", "quarantine"]
