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
run's log by watching that file change, which only a checkpoint does.

Configured in ``dagster_home/dagster.yaml`` (``storage: custom``); the PostgreSQL instance does not use it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
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
        super().__init__(base_dir, inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        if shard != INDEX_SHARD:
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            engine = self._index_engine.get()
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

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
