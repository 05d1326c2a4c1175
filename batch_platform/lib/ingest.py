"""Ingest one landed batch: validate, quarantine on rejection, otherwise replace its partition atomically; and
which daily batches a range of flight days brings (:func:`daily_batches`)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from batch_platform.lib import warehouse
from batch_platform.lib.contracts import DAILY_CONTRACTS, FLIGHT_SCHEDULE, TableContract
from batch_platform.lib.landing import schedule_days
from batch_platform.lib.validation import BatchRejected, MissingBatchError, ValidatedBatch, validate_batch


@dataclass(frozen=True)
class IngestResult:
    batch: ValidatedBatch
    load: warehouse.LoadResult


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
    run_id: str = "",
    require_manifest: bool = True,
    lock_timeout_s: float = 600.0,
) -> IngestResult:
    """Validate ``path``; on a contract violation move it to quarantine and re-raise (the warehouse is not
    opened); otherwise replace the partition in one transaction."""
    try:
        batch = validate_batch(path, contract, partition, require_manifest=require_manifest)
    except MissingBatchError:
        raise
    except BatchRejected as e:
        e.quarantined_to = str(quarantine(path, e, quarantine_dir, run_id=run_id))
        raise
    with warehouse.connect(db_path, timeout_s=lock_timeout_s) as con:
        load = warehouse.load_batch(
            con, contract, batch.data, partition=partition, source_file=path, file_sha256=batch.file_sha256,
            run_id=run_id,
        )
    return IngestResult(batch=batch, load=load)


def ingest_many(
    db_path: Path,
    batches: list[tuple[TableContract, Path, dt.date | None]],
    *,
    quarantine_dir: Path,
    run_id: str = "",
    require_manifest: bool = True,
    workers: int = 2,
    lock_timeout_s: float = 600.0,
) -> list[IngestResult]:
    """Backfill: :func:`ingest_batch` for many batches, in order, faster. Validation runs ``workers`` batches
    ahead in threads (each in its own in-memory DuckDB, which releases the GIL); loads go in order over one
    warehouse connection, each partition replaced in its own transaction as :func:`ingest_batch` does. A rejected
    batch is quarantined and its error raised after every batch before it was loaded; none after it is."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    results: list[IngestResult] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            warehouse.connect(db_path, timeout_s=lock_timeout_s) as con:
        todo = iter(batches)
        pending: deque = deque()

        def submit_next() -> None:
            item = next(todo, None)
            if item is not None:
                contract, path, partition = item
                pending.append((item, pool.submit(validate_batch, path, contract, partition,
                                                  require_manifest=require_manifest)))

        for _ in range(2 * workers):
            submit_next()
        while pending:
            (contract, path, partition), future = pending.popleft()
            try:
                batch = future.result()
            except MissingBatchError:
                raise
            except BatchRejected as e:
                e.quarantined_to = str(quarantine(path, e, quarantine_dir, run_id=run_id))
                raise
            submit_next()
            load = warehouse.load_batch(con, contract, batch.data, partition=partition, source_file=path,
                                        file_sha256=batch.file_sha256, run_id=run_id)
            results.append(IngestResult(batch=batch, load=load))
    return results


def daily_batches(start: dt.date, end: dt.date) -> list[tuple[dt.date, tuple[TableContract, ...]]]:
    """The daily batches landed with flight days ``[start, end]``, per partition day in day order: every daily
    table for each day of ``start .. end``, then the flight schedule alone for the day after ``end`` (published
    the day before its flights, which have not landed yet; none after the data set's last day). Empty when
    ``start > end``."""
    if start > end:
        return []
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return [(day, DAILY_CONTRACTS) for day in days] + [
        (day, (FLIGHT_SCHEDULE,)) for day in schedule_days(start, end) if day > end
    ]


__all__ = ["IngestResult", "daily_batches", "ingest_batch", "ingest_many", "quarantine"]
