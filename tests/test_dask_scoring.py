"""Batch scoring on a Dask cluster (``lib/dask_scoring.py``) against the local path, on a real ``distributed``
LocalCluster of two worker processes and a private copy of the session platform: the same stored rows for the same
model version; a worker SIGKILLed mid-scoring fails the run with a named error, leaves the day's previous
predictions as they were, and a re-run on a healthy cluster stores the same rows again; the Dagster asset scores
on the cluster named by ``BATCH_PLATFORM_DASK_ADDRESS``."""

from __future__ import annotations

import datetime as dt

import dask
import pandas as pd
import pytest

from batch_platform import settings
from batch_platform.lib import dask_scoring, faults
from tests.test_scoring import NEXT_DAY, _score, _stored, scoring_env  # noqa: F401 - the fixture

RUN_COLUMNS = ["run_id", "scored_at"]  # what differs between two runs of the same day by design


def _cluster(**kwargs):
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, **kwargs)


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=RUN_COLUMNS).reset_index(drop=True)


def _models_loaded(dask_worker=None) -> int:
    from batch_platform.lib import dask_scoring as on_worker

    return len(on_worker._BOOSTERS)


def test_on_two_workers_the_day_is_stored_as_the_local_path_stores_it(scoring_env):
    from distributed import Client

    s = scoring_env
    local = _score(s, chunk_rows=300)
    local_rows = _stored(s)
    with _cluster() as cluster, Client(cluster) as client:
        on_dask = _score(s, chunk_rows=300, predict=dask_scoring.ClusterScorer(client))
        loaded = client.run(_models_loaded)
    assert on_dask.rows == local.rows > 300 and on_dask.chunks == local.chunks > 1
    assert sum(loaded.values()) >= 1  # the scores were computed on the workers
    pd.testing.assert_frame_equal(_rows(_stored(s)), _rows(local_rows))  # scores, keys, version, sha, fallbacks


def test_a_worker_killed_mid_scoring_keeps_the_previous_predictions_and_a_rerun_converges(scoring_env):
    from distributed import Client

    s = scoring_env
    _score(s)
    before = _stored(s)
    # the worker SIGKILLs itself as it starts scoring a part; the scheduler gives up on the task at once (by
    # default it would retry it on the other worker, which dies the same way, three times)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            _cluster(env={faults.CRASH_VAR: "score.dask_part"}) as cluster, Client(cluster) as client:
        with pytest.raises(dask_scoring.ClusterScoringError, match="KilledWorker"):
            _score(s, predict=dask_scoring.ClusterScorer(client))
    pd.testing.assert_frame_equal(_stored(s), before)  # the previous predictions, untouched
    assert not list(s["staging"].glob(f"{s['spec'].name}-{NEXT_DAY}-*"))  # nothing staged is left behind
    with _cluster() as cluster, Client(cluster) as client:
        again = _score(s, predict=dask_scoring.ClusterScorer(client))
    assert again.rows == len(before)
    pd.testing.assert_frame_equal(_rows(_stored(s)), _rows(before))


def test_the_scoring_asset_scores_on_the_cluster_the_setting_names(scoring_env, monkeypatch):
    import dagster as dg
    from distributed import Client

    from batch_platform.definitions import defs as lazy_defs
    from batch_platform.defs.scoring.assets import SCORING_JOB, predictions_key
    from batch_platform.pipeline import run_job

    s = scoring_env
    key = predictions_key(s["spec"])
    with _cluster() as cluster:  # (no client of the test's own while the step runs: the step brings its own)
        monkeypatch.setenv(settings.DASK_ADDRESS_VAR, cluster.scheduler_address)
        with dg.instance_for_test() as instance:
            outcome = run_job(lazy_defs(), instance, SCORING_JOB, NEXT_DAY.isoformat(), asset_selection=[key],
                              with_checks=True)
            assert outcome.success, outcome.errors
            metadata = instance.get_latest_materialization_event(key).asset_materialization.metadata
        with Client(cluster) as client:
            loaded = client.run(_models_loaded)
    assert metadata["scored_on"].value == cluster.scheduler_address
    assert sum(loaded.values()) >= 1  # the asset's scores were computed on the workers


def test_a_scheduler_that_does_not_answer_is_a_named_error():
    from batch_platform.defs.resources import DaskClusterUnreachable, DaskResource

    with pytest.raises(DaskClusterUnreachable, match="tcp://127.0.0.1:9 .*unreachable"):
        with DaskResource(address="tcp://127.0.0.1:9", connect_timeout_s=2).client():
            pass
    with DaskResource(address="").client() as none:  # no address: the local path
        assert none is None
