"""Training on a Dask cluster (``lib/dask_training.py``) against the local path, on a real ``distributed``
LocalCluster (worker processes): the machinery (each worker's part of the rows, the labels beside them, the
validation curve computed on the driver, LightGBM's early stopping replayed) gives the local model byte for byte on
one worker; the emulated early stopping keeps LightGBM's own iteration."""

from pathlib import Path

import dagster as dg
import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_platform.lib import dask_training, training
from batch_platform.lib.snapshot_matrix import WindowRows, read_layout
from batch_platform.lib.specs import load_specs
from tests.test_scoring import scoring_env  # noqa: F401 - the fixture (a private copy of the platform)

FAST = training.TrainConfig(n_trials=2, max_rounds=80)


@pytest.fixture(autouse=True)
def _env(on_platform):
    return on_platform


@pytest.fixture
def snapshot(platform, tmp_path) -> Path:
    """The session's flight_delay training set in row groups of 2,000 rows (several parts per window)."""
    event = platform["instance"].get_latest_materialization_event(dg.AssetKey(["flight_delay_training_set"]))
    path = tmp_path / "snapshot.parquet"
    pq.write_table(pq.read_table(event.asset_materialization.metadata["snapshot"].value), path, row_group_size=2000)
    return path


def _without_parameters(model_text: str) -> str:
    head, rest = model_text.split("\nparameters:\n", 1)
    return head + rest.split("\nend of parameters\n", 1)[1]


def test_the_parts_hold_every_row_of_the_window_once_with_its_label(snapshot):
    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    X, y = dask_training.window_arrays(layout, "train", parts=3)
    assert X.numblocks == (3, 1)
    whole = np.vstack(list(WindowRows(layout, "train").batches()))
    labels = layout.labels[layout.positions("train")]
    order = np.concatenate([np.arange(len(labels))[p::3] for p in range(3)])  # part p: rows p, p + 3, ...
    np.testing.assert_array_equal(X.compute(scheduler="synchronous"), whole[order])
    np.testing.assert_array_equal(y.compute(scheduler="synchronous"), labels[order])


def test_on_one_worker_the_dask_model_is_the_local_model_byte_for_byte(snapshot):
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    local = training.train_snapshot(snapshot, spec, FAST)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_dask = dask_training.train_on_dask(snapshot, spec, client, FAST)
    # the same model: the trees, features and categories; the parameters block records the run (the Dask worker's
    # thread count, its machine list)
    assert _without_parameters(on_dask.model_text) == _without_parameters(local.model_text)
    assert "end of trees" in local.model_text and "pandas_categorical" in local.model_text
    assert [t["best_iteration"] for t in on_dask.trials] == [t["best_iteration"] for t in local.trials]


def test_the_replayed_early_stopping_keeps_lightgbms_iteration(snapshot):
    """LightGBM's own early stopping on the validation window, and the replay over the whole validation curve of
    the same model trained for every round: the same iteration and the same value."""
    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    config = training.TrainConfig(n_trials=1, max_rounds=200)  # the baseline parameters alone
    stopped = training.train(pd.read_parquet(snapshot), spec, config)
    assert stopped.best_iteration < config.max_rounds - config.early_stopping_rounds  # it did stop early
    train = lgb.Dataset(np.vstack(list(WindowRows(layout, "train").batches())),
                        label=layout.labels[layout.positions("train")], feature_name=layout.features,
                        categorical_feature=layout.categorical)
    full = lgb.train({**training._base_params(spec, config), **training.BASELINE}, train,
                     num_boost_round=config.max_rounds)
    iteration, value = dask_training.early_stopping_iteration(
        dask_training.validation_curve(full, layout, spec), config.early_stopping_rounds, higher_better=True)
    assert iteration == stopped.best_iteration
    assert value == pytest.approx(stopped.validation_metric, abs=1e-6)


def test_on_two_workers_the_same_cluster_trains_the_same_model_every_run(snapshot):
    """Chunk i on the i-th worker and LightGBM's rank i: without that ordering, which worker was rank 0 changed
    from run to run (the scheduler's order) and so did the bins and the model."""
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    models = []
    for _ in range(2):  # a new cluster each time: new worker addresses, new ports
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            models.append(dask_training.train_on_dask(snapshot, spec, client, FAST))
    assert _without_parameters(models[0].model_text) == _without_parameters(models[1].model_text)
    assert "[num_machines: 2]" in models[0].model_text  # trained data-parallel on both workers


def test_the_candidate_asset_trains_on_the_cluster_the_setting_names(scoring_env, monkeypatch):  # noqa: F811
    """``BATCH_PLATFORM_DASK_ADDRESS`` set: the candidate step (same run, same gate check, same registry) trains
    data-parallel on the cluster's two workers."""
    from distributed import LocalCluster

    from batch_platform import settings
    from batch_platform.definitions import defs as lazy_defs
    from batch_platform.defs.training.assets import training_set_key
    from batch_platform.defs.training.models import candidate_key
    from batch_platform.pipeline import run_job

    spec = scoring_env["spec"]
    # no client of the test's own while the step runs: the step brings its own
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(settings.DASK_ADDRESS_VAR, cluster.scheduler_address)
        with dg.instance_for_test() as instance:
            outcome = run_job(lazy_defs(), instance, "train_and_gate",
                              asset_selection=[training_set_key(spec), candidate_key(spec)], with_checks=True)
            assert outcome.success, outcome.errors
            metadata = instance.get_latest_materialization_event(candidate_key(spec)).asset_materialization.metadata
    assert metadata["trained_on"].value == cluster.scheduler_address
    assert "[num_machines: 2]" in Path(metadata["artifact"].value).read_text()
