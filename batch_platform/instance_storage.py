"""Dagster's SQLite storage, with the instance-wide databases kept open per process.

Dagster's SQLite storage opens a new engine and connection for every statement and closes it after. In WAL mode
the last connection to close a database checkpoints it into the main file, with its fsyncs: every event a run
writes, and every query a sensor or automation tick makes, pays for a checkpoint. A morning's feature build writes
about 750 events (each dbt test is an asset check: planned, then evaluated), and on this storage about a third of
the build was that bookkeeping.

``PooledSqliteStorage`` is Dagster's own ``DagsterSqliteStorage`` (same files, same layout, same tables: an
instance switches to and from it freely) except that the cross-run index of the event log (``history/runs/index.db``)
and the run storage (``history/runs.db``) keep one connection open per process, with ``synchronous=NORMAL``, which
SQLite recommends for WAL databases (a commit survives a crash of the process, and the database survives a power
loss; only the last commits before a power loss may be lost). Checkpoints then happen as SQLite schedules them.

The per-run event databases (``history/runs/<run_id>.db``) keep Dagster's open-and-close: the UI follows a running
run's log by watching that file change, which only a checkpoint does. Except for Dagster's event batches (a run's
planned materializations and checks, a materialization of many partitions at once: one event per partition, check
or asset, emitted together): a batch is written to its run database in one connection and one transaction, closed
(and checkpointed) once at its end. Dagster hands events over as batches when ``DAGSTER_EVENT_BATCH_SIZE`` is set
(its default, 0, writes them one by one); a process opening this storage sets it unless it is set already.

Configured in ``dagster_home/dagster.yaml`` (``storage: custom``); the PostgreSQL instance does not use it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from dagster._config import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._serdes import ConfigurableClassData
from dagster._utils import mkdir_p

INDEX_SHARD = "index"
BUSY_TIMEOUT_SECONDS = 15  # Dagster's own for SQLite storage
EVENT_BATCH_VAR = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 1000
"""Events Dagster buffers before handing a batch over even if it has not ended (a day's ~200 planned events, a
59-day backfill's ~180 materializations: one batch each)."""
_INHERITED: list[sa.Engine] = []


class _ProcessEngine:
    """One engine per database and process, holding one connection (a forked child opens its own)."""

    def __init__(self, url: str):
        self._url = url
        self._lock = threading.Lock()
        self._engine: sa.Engine | None = None
        self._pid: int | None = None

    def get(self) -> sa.Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                if self._engine is not None:
                    # inherited through fork(): never used, and never closed here either (closing a parent's
                    # SQLite handle in a child may checkpoint the WAL under the parent), kept from the collector
                    _INHERITED.append(self._engine)
                engine = sa.create_engine(self._url, pool_size=1, max_overflow=4,
                                          connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi_connection, _record):
                    dbapi_connection.execute("PRAGMA synchronous=NORMAL")

                self._engine, self._pid = engine, os.getpid()
            return self._engine

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None and self._pid == os.getpid():
                self._engine.dispose()
            self._engine = None


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """The event log with its cross-run index shard kept open; run shards as Dagster opens them."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._index_engine = _ProcessEngine(create_db_conn_string(os.path.abspath(base_dir), INDEX_SHARD))
        self._batch = threading.local()  # .shards: the run databases held open by the batch being stored
        os.environ.setdefault(EVENT_BATCH_VAR, str(EVENT_BATCH_SIZE))
        super().__init__(base_dir, inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        if shard != INDEX_SHARD:
            held = getattr(self._batch, "shards", None)
            if held is None:
                with super()._connect(shard) as conn:
                    yield conn
            else:
                yield self._held_run_shard(held, shard)
            return
        with self._db_lock:
            engine = self._index_engine.get()
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events) -> None:
        """Dagster's batch (see the module): each run database it writes opened once, its events inserted in one
        transaction, committed and closed at the end; the cross-run index as for single events. On an error
        nothing of the batch is committed to the run database (Dagster then stores the events one by one)."""
        held: dict[str, tuple[sa.Engine, sa.Connection, sa.RootTransaction]] = {}
        self._batch.shards = held
        try:
            for event in events:
                self.store_event(event)
        except BaseException:
            self._batch.shards = None
            for engine, conn, transaction in held.values():
                transaction.rollback()
                conn.close()
                engine.dispose()
            raise
        self._batch.shards = None
        for engine, conn, transaction in held.values():
            try:
                transaction.commit()
            finally:
                conn.close()
                engine.dispose()

    def _held_run_shard(self, held: dict, shard: str) -> sa.Connection:
        """The connection of this batch to run database ``shard``, opened (as Dagster opens it) on first use."""
        if shard not in held:
            with self._db_lock:
                engine = sa.create_engine(self.conn_string_for_shard(shard), poolclass=NullPool,
                                          connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                conn = engine.connect()
                held[shard] = (engine, conn, conn.begin())
        return held[shard][1]

    def dispose(self) -> None:
        super().dispose()
        self._index_engine.dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    """The run storage kept open."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        self._engine = _ProcessEngine(conn_string)
        super().__init__(conn_string, inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with self._engine.get().connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """``DagsterSqliteStorage`` with the pooled event-log index and run storage (the schedule storage as is)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):  # noqa: super() not called
        self.base_dir = base_dir
        runs = _runs_directory(base_dir)
        mkdir_p(runs)
        self._run_storage = PooledSqliteRunStorage.from_local(runs)
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def config_type(cls):
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
