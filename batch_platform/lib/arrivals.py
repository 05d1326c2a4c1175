"""Which landed batches are due for ingest: complete, published, and not loaded with these bytes yet.

A batch is *complete* when its manifest (the upstream's "export finished" marker, written after the file) is there
and the file's sha256 equals the manifest's; *published* when the manifest's ``published_at`` (or, when it does not
say, the time model's scheduled publication) is not after ``now``; *due* when the warehouse's load log does not hold
that partition loaded from a file with that sha256. A correction (new bytes) is due again; a duplicate is not.

Files are hashed only when the load log does not already vouch for the manifest's sha256, so a tick over a year
of landed days reads manifests, not data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from batch_platform.lib.clock import DataClock
from batch_platform.lib.contracts import TableContract
from batch_platform.lib.landing import MANIFEST_SUFFIX, daily_batch_path, manifest_path, reference_batch_path
from batch_platform.lib.time_model import TimeModel
from batch_platform.lib.validation import BatchRejected, file_sha256, manifest_published_at, read_manifest

ALL_PARTITIONS = "__all__"


@dataclass(frozen=True)
class Arrival:
    table: str
    partition: dt.date | None
    """The day of a daily batch; ``None`` for a reference snapshot."""
    path: Path
    sha256: str
    published_at: dt.datetime

    @property
    def partition_key(self) -> str:
        return self.partition.isoformat() if self.partition is not None else ALL_PARTITIONS

    @property
    def run_key_part(self) -> str:
        """``table@partition=sha256``: what a run key is made of (a correction has other bytes, another key)."""
        return f"{self.table}@{self.partition_key}={self.sha256}"


@dataclass(frozen=True)
class Skipped:
    table: str
    partition_key: str
    reason: str


def _manifest(path: Path) -> dict | None:
    try:
        return read_manifest(path)
    except BatchRejected:
        return None


def _published_at(path: Path, manifest: dict, table: str, day: dt.date,
                  time_model: TimeModel) -> dt.datetime | None:
    """As ingest reads it: the manifest's ``published_at``, else the time model's schedule; ``None`` if unreadable."""
    try:
        return manifest_published_at(path, manifest) or time_model.published_at(table, day)
    except BatchRejected:
        return None


def _candidates(landing: Path, daily: list[TableContract], reference: list[TableContract]):
    for contract in daily:
        folder = landing / contract.table
        if not folder.is_dir():
            continue
        for mpath in sorted(folder.glob(f"*{contract.extension}{MANIFEST_SUFFIX}")):
            name = mpath.name[: -len(MANIFEST_SUFFIX)]
            try:
                day = dt.date.fromisoformat(name.removesuffix(contract.extension))
            except ValueError:
                continue
            yield contract, day, daily_batch_path(landing, contract.table, day)
    for contract in reference:
        path = reference_batch_path(landing, contract.table)
        if manifest_path(path).exists():
            yield contract, None, path


def due_batches(landing: Path, *, daily: list[TableContract], reference: list[TableContract],
                loaded: dict[tuple[str, str], str], now: dt.datetime, time_model: TimeModel, clock: DataClock,
                has_partition=lambda key: True) -> tuple[list[Arrival], list[Skipped]]:
    """The batches of ``landing`` to ingest now (see the module docstring) and the ones passed over, with why.

    ``loaded``: (table, partition key) -> the sha256 of the file the load log says was loaded. ``has_partition``:
    whether a day is a partition of the asset (outside the partitions, a batch cannot be loaded)."""
    due: list[Arrival] = []
    skipped: list[Skipped] = []
    for contract, day, path in _candidates(Path(landing), daily, reference):
        key = day.isoformat() if day is not None else ALL_PARTITIONS
        manifest = _manifest(path)
        if manifest is None or not path.exists():
            skipped.append(Skipped(contract.table, key, "manifest unreadable or file missing: still arriving"))
            continue
        sha = manifest.get("sha256")
        if sha and loaded.get((contract.table, key)) == sha:
            continue  # loaded with exactly these bytes
        published = _published_at(path, manifest, contract.table,
                                  day if day is not None else clock.first_day, time_model)
        if published is None:
            skipped.append(Skipped(contract.table, key, "manifest published_at is not an instant"))
            continue
        if published > now:
            skipped.append(Skipped(contract.table, key, f"published at {published.isoformat()}, after now"))
            continue
        if day is not None and not has_partition(key):
            skipped.append(Skipped(contract.table, key, "not a partition on this data clock"))
            continue
        actual = file_sha256(path)
        if sha and actual != sha:
            skipped.append(Skipped(contract.table, key, "file sha256 differs from its manifest: still arriving "
                                   "(or truncated; ingest quarantines it if it stays so)"))
            continue
        if loaded.get((contract.table, key)) == actual:
            continue
        due.append(Arrival(contract.table, day, path, actual, published))
    return due, skipped


__all__ = ["ALL_PARTITIONS", "Arrival", "Skipped", "due_batches"]
