"""The project's SQLite instance storage: Dagster's files and tables, with the index and run databases kept open."""

import multiprocessing
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from batch_platform import settings
from batch_platform.instance_storage import PooledSqliteEventLogStorage, PooledSqliteRunStorage
from tests.conftest import project_dagster_home


thing_check = dg.AssetCheckSpec("ok", asset="thing")


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2013-01-01"), check_specs=[thing_check])
def thing(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"day": context.partition_key},
                                check_results=[dg.AssetCheckResult(check_name="ok", passed=True)])


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = project_dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _materialize(instance, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([thing], instance=instance, partition_key=day)


def _index_connection_id(instance) -> int:
    with instance.event_log_storage.index_connection() as conn:
        return id(conn.connection.dbapi_connection)


def test_the_project_instance_uses_it_and_keeps_dagsters_files(home):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        result = _materialize(instance, "2013-01-02")
        assert result.success
        # Dagster's layout: runs in history/, the event index and one database per run in history/runs/
        assert (home / "history" / "runs.db").is_file()
        assert (home / "history" / "runs" / "index.db").is_file()
        assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
        # the index is one open connection, reused, in WAL mode with synchronous=NORMAL (1)
        first = _index_connection_id(instance)
        assert _index_connection_id(instance) == first
        with instance.event_log_storage.index_connection() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        with instance.run_storage.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        # a run's own database is still opened and closed per write (checkpointed: the UI follows a running run's
        # log by watching that file change)
        assert not (home / "history" / "runs" / f"{result.run_id}.db-wal").exists()
        assert len(instance.get_runs()) == 1


def test_an_instance_switches_to_and_from_dagsters_default_storage(home):
    with dg.DagsterInstance.get() as instance:
        pooled_run = _materialize(instance, "2013-01-02").run_id
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's default storage, same home
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert instance.get_run_by_id(pooled_run).is_success
        event = instance.get_latest_materialization_event(dg.AssetKey("thing"))
        assert event.run_id == pooled_run and event.asset_materialization.partition == "2013-01-02"
        default_run = _materialize(instance, "2013-01-03").run_id
    shutil.copy(settings.DEFAULT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        assert {r.run_id for r in instance.get_runs()} == {pooled_run, default_run}
        status = instance.get_status_by_partition(dg.AssetKey("thing"), ["2013-01-02", "2013-01-03"],
                                                  thing.partitions_def)
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([thing_check.key])
        assert check[thing_check.key].run_id == default_run


def test_threads_share_it(home):
    with dg.DagsterInstance.get() as instance:
        _materialize(instance, "2013-01-02")

        def read(_):
            return (len(instance.get_runs()),
                    instance.get_latest_materialization_event(dg.AssetKey("thing")).asset_materialization.partition)

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(read, range(64))) == {(1, "2013-01-02")}


def _child_reads(queue, instance, parent_connection):
    # the instance inherited from the parent: its open connections are the parent's, the child opens its own
    queue.put((_index_connection_id(instance) != parent_connection, len(instance.get_runs()),
               _materialize(instance, "2013-01-05").success))


def test_a_forked_process_opens_its_own_connection(home):
    with dg.DagsterInstance.get() as instance:
        _materialize(instance, "2013-01-02")
        parent_connection = _index_connection_id(instance)
        queue = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=_child_reads, args=(queue, instance, parent_connection))
        child.start()
        child.join(60)
        assert child.exitcode == 0 and queue.get(timeout=5) == (True, 1, True)
        # and the parent's connection still works after the child exited
        assert _index_connection_id(instance) == parent_connection
        assert len(instance.get_runs()) == 2
        with sqlite3.connect(home / "history" / "runs" / "index.db") as raw:
            assert raw.execute("select count(*) from event_logs where dagster_event_type = "
                               "'ASSET_MATERIALIZATION'").fetchone()[0] == 2


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2013-01-01"),
          backfill_policy=dg.BackfillPolicy.single_run())
def days(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


def _range_run(instance) -> dg.ExecuteInProcessResult:
    """One run over ten partitions: Dagster plans and records a materialization per partition, each set a batch."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return dg.materialize([days], instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: "2013-01-01",
                                                           ASSET_PARTITION_RANGE_END_TAG: "2013-01-10"})


def _stored(instance, run_id: str) -> list[tuple]:
    """What the run's log and the cross-run index hold: event types, partitions, assets (not ids or times)."""
    log = [(e.dagster_event_type, e.dagster_event.partition, e.dagster_event.asset_key)
           for e in instance.all_logs(run_id) if e.dagster_event is not None]
    index = [(r.partition_key, r.asset_materialization.metadata["days"].value)
             for r in instance.fetch_materializations(days.key, limit=100).records if r.run_id == run_id]
    return log + sorted(index)


def test_an_event_batch_is_written_to_its_run_database_at_once_and_stored_as_one_by_one(home, monkeypatch):
    """Dagster's event batches (the planned materializations of a range run, its materialization per partition) go
    to the run's database in one connection: the same events in the run's log and the cross-run index as when
    Dagster writes them one by one (DAGSTER_EVENT_BATCH_SIZE=0), with far fewer opens of the run's database."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from batch_platform.instance_storage import EVENT_BATCH_SIZE, EVENT_BATCH_VAR

    opened: list[str] = []
    dagsters = SqliteEventLogStorage._connect

    def counted(self, shard):  # Dagster's open-write-close of one database
        opened.append(shard)
        return dagsters(self, shard)

    monkeypatch.setattr(SqliteEventLogStorage, "_connect", counted)
    monkeypatch.delenv(EVENT_BATCH_VAR, raising=False)
    with dg.DagsterInstance.get() as instance:
        assert os.environ[EVENT_BATCH_VAR] == str(EVENT_BATCH_SIZE)  # the storage asks Dagster for batches
        batched = _range_run(instance)
        assert batched.success
        batched_events, batched_opens = _stored(instance, batched.run_id), opened.count(batched.run_id)
    monkeypatch.setenv(EVENT_BATCH_VAR, "0")
    opened.clear()
    with dg.DagsterInstance.get() as instance:
        single = _range_run(instance)
        single_events, single_opens = _stored(instance, single.run_id), opened.count(single.run_id)

    assert batched_events == single_events
    planned = [e for e in batched_events if e[0] == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
    assert sorted(p for _, p, _ in planned) == [f"2013-01-{d:02d}" for d in range(1, 11)]
    assert [e[:2] for e in batched_events if len(e) == 2] == [(f"2013-01-{d:02d}", 10) for d in range(1, 11)]
    # ten planned events and ten materializations: two opens instead of twenty
    assert single_opens - batched_opens >= 18, (single_opens, batched_opens)
    assert not (home / "history" / "runs" / f"{batched.run_id}.db-wal").exists()  # closed (checkpointed) at the end
