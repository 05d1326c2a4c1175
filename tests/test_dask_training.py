"""Training on a Dask cluster (``lib/dask_training.py``) against the local path, on a real ``distributed``
LocalCluster (worker processes): the machinery (each worker's part of the rows, the bins from the local path's own
sample, LightGBM's early stopping on the leader, whose word stops every machine) gives the local model byte for byte
on one worker, the local model's first tree on two, and models of the local path's quality over seeds; a machine
SIGKILLed or raising mid-training fails the training by name and leaves the same cluster able to train again."""

import re
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest

from batch_platform.lib import dask_training, training
from batch_platform.lib.snapshot_matrix import WindowRows, as_lightgbm_sequence, read_layout
from batch_platform.lib.specs import load_specs
from tests.conftest import project_dagster_home
from tests.test_scoring import scoring_env  # noqa: F401 - the fixture (a private copy of the platform)

FAST = training.TrainConfig(n_trials=2, max_rounds=80)


@pytest.fixture(autouse=True)
def _env(on_platform):
    return on_platform


def _snapshot_of(platform, spec: str, path: Path) -> Path:
    """The session's training set of ``spec`` in row groups of 2,000 rows (several parts per window)."""
    event = platform["instance"].get_latest_materialization_event(dg.AssetKey([f"{spec}_training_set"]))
    pq.write_table(pq.read_table(event.asset_materialization.metadata["snapshot"].value), path, row_group_size=2000)
    return path


@pytest.fixture
def snapshot(platform, tmp_path) -> Path:
    """The session's flight_delay training set in row groups of 2,000 rows (several parts per window)."""
    return _snapshot_of(platform, "flight_delay", tmp_path / "snapshot.parquet")


def _without_parameters(model_text: str) -> str:
    head, rest = model_text.split("\nparameters:\n", 1)
    return head + rest.split("\nend of parameters\n", 1)[1]


def test_the_parts_hold_every_row_of_the_window_once(snapshot):
    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    rows = WindowRows(layout, "train")
    parts = [dask_training.part_matrix(str(snapshot), rows.row_groups, p, 3, layout.features, layout.categorical,
                                       layout.categories, layout.nullable_ints) for p in range(3)]
    whole = np.vstack(list(rows.batches()))
    for p in range(3):  # part p: rows p, p + 3, ... (the labels are sent as y[p::3])
        np.testing.assert_array_equal(parts[p], whole[p::3])


def test_the_bin_sample_is_the_rows_lightgbm_bins_the_local_model_from(snapshot):
    """A Dataset over the sample alone bins every feature as the local path's Dataset over the whole window."""
    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    # a sample smaller than the window (8,682 rows), drawn as LightGBM draws it; feature bundling off, as LightGBM
    # seeds its bundling search with the Dataset's row count (the bins are what the sample decides)
    params = {**training._base_params(spec, FAST), "bin_construct_sample_cnt": 5000, "enable_bundle": False}
    window = WindowRows(layout, "train")
    whole = np.vstack(list(window.batches()))
    sample = dask_training.bin_sample(layout, params)
    assert len(sample) == 5000 and len(np.unique(sample, axis=0)) > 4900
    kwargs = dict(feature_name=layout.features, categorical_feature=layout.categorical, params=params)
    local = lgb.Dataset([as_lightgbm_sequence(window)], label=layout.labels[layout.positions("train")], **kwargs)
    reference = lgb.Dataset(sample, **kwargs)
    rows = lgb.Dataset(whole, label=layout.labels[layout.positions("train")], reference=reference, **kwargs)
    for d in (local, rows):
        d.construct()
    # the same bins: a model trained on the rows binned against the sample is the local model, tree for tree
    rounds = 5
    local_model = lgb.train({**params, **training.BASELINE}, local, rounds).model_to_string()
    assert _without_parameters(lgb.train({**params, **training.BASELINE}, rows, rounds).model_to_string()) == \
        _without_parameters(local_model)
    # and the sample is what makes it so: the same rows binned from a sample of their own are not
    assert _without_parameters(lgb.train({**params, **training.BASELINE, "data_random_seed": 7},
                                         lgb.Dataset(whole, label=layout.labels[layout.positions("train")],
                                                     **{**kwargs, "params": {**params, "data_random_seed": 7}}),
                                         rounds).model_to_string()) != _without_parameters(local_model)


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


def test_once_the_rows_are_binned_the_workers_hold_the_binned_rows_only(snapshot):
    """Each machine's rows are read and binned once for every trial of the search; then each worker holds its
    machine's binned data and nothing else: the matrices read from the snapshot, the labels and the bin sample are
    released. The leader's data holds the validation window too."""
    import time

    from distributed import Client, LocalCluster, wait

    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    y_train, y_val = (layout.labels[layout.positions(w)] for w in ("train", "validation"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = dask_training.placed_workers(client)
        data = dask_training.machine_data(client, layout, workers, y_train, y_val,
                                          training._base_params(spec, FAST))
        wait(data)
        expected = {w: (d.key,) for w, d in zip(workers, data)}
        deadline = time.monotonic() + 30
        while (held := {w: tuple(keys) for w, keys in client.has_what().items()}) != expected \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert held == expected
        built = client.gather([client.submit(lambda d: (d.rows.num_data(), d.valid is not None), d, workers=[w],
                                             pure=False) for w, d in zip(workers, data)])
    assert [rows for rows, _ in built] == [len(y_train[0::2]), len(y_train[1::2])]
    assert [leads for _, leads in built] == [True, False]


def test_on_two_workers_every_machine_stops_after_the_round_the_leader_stops_at(snapshot):
    """The leader's early stopping on the validation window ends the training on both machines after the same
    round (the driver checks that they agree): the best round and the patience after it, well before
    ``max_rounds``, as the local path stops. The validation metric reported is the model's on the whole window."""
    from distributed import Client, LocalCluster

    from batch_platform.lib import evaluation

    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    config = training.TrainConfig(n_trials=1, max_rounds=300)  # the baseline parameters alone
    local = training.train_snapshot(snapshot, spec, config).trials[0]
    assert local["rounds"] == local["best_iteration"] + config.early_stopping_rounds < config.max_rounds
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = dask_training.train_on_dask(snapshot, spec, client, config)
    assert "[num_machines: 2]" in model.model_text
    trial = model.trials[0]
    assert trial["rounds"] == trial["best_iteration"] + config.early_stopping_rounds < config.max_rounds
    X = np.vstack(list(WindowRows(layout, "validation").batches()))
    p = training.load_booster(model.model_text).predict(X)
    assert training.load_booster(model.model_text).current_iteration() == trial["best_iteration"]
    assert evaluation.metrics(layout.labels[layout.positions("validation")], p)["roc_auc"] == \
        pytest.approx(trial["validation_metric"], abs=1e-6)


def test_a_machine_that_hears_nothing_from_the_leader_fails_by_name():
    """A machine waits for the leader's word after each round at most its timeout (a real scheduler's queue)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster):
        orders = dask_training._RoundOrders(["batch-platform-rounds-test"], timeout=0.5)
        with pytest.raises(dask_training.LeaderLostError, match="no word from the leading machine"):
            orders.receive()


class _FailingRounds(training.RoundCounter):
    """A machine's round counter that raises after its third round (a machine failing in Python: its process
    lives on, and with it LightGBM's network unless the machine leaves it)."""

    def __call__(self, env) -> None:
        super().__call__(env)
        if self.rounds == 3:
            raise MemoryError("injected after round 3")


def _fail_here(how: str, point: str | None) -> None:
    """On one worker: its machine is SIGKILLed at the crash point, or raises after round 3."""
    import os

    from batch_platform.lib import faults
    from batch_platform.lib import training as on_worker

    if how == "killed":
        os.environ[faults.CRASH_VAR] = point
    else:
        on_worker.RoundCounter = _FailingRounds


def _heal() -> None:
    from batch_platform.lib import training as on_worker

    on_worker.RoundCounter = _FailingRounds.__bases__[0]  # the real one (this module's ``training`` is patched too)


def _executing(dask_worker=None) -> int:
    """The tasks a worker's threads run, cancelled ones too (the scheduler no longer counts those)."""
    return len(dask_worker.state.executing)


def _ours(dask_scheduler=None) -> dict[str, list]:
    """The trainings' queues and events the scheduler holds (it keeps a queue while a client holds it, and an
    event while it is set or waited on)."""
    def named(names):
        return sorted(n for n in names if n.startswith("batch-platform-"))
    return {"queues": named(dask_scheduler.extensions["queues"].queues),
            "events": named(dask_scheduler.extensions["events"]._events)}


def _left_on_scheduler(client, within: float = 10.0) -> dict[str, list]:
    """:func:`_ours` once it is empty, or after ``within`` seconds (the machines' call-off watches wait 1 s at a
    time; a failed training's are dropped after ``FORGET_AFTER_S``)."""
    import time

    end = time.monotonic() + within
    while any((left := client.run_on_scheduler(_ours)).values()) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def _idle(client, within: float = 60.0) -> bool:
    """Whether both workers' threads are free (no machine left waiting on another) within ``within`` seconds."""
    import time

    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            running = client.run(_executing)
        except OSError:  # (a worker going down as it is asked)
            running = {}
        if len(running) == 2 and not any(running.values()):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("how, rank, point", [
    ("killed", "leader", "train.dask_leader_round"), ("killed", "follower", "train.dask_follower_round"),
    ("raises", "leader", None), ("raises", "follower", None),
    # before LightGBM's network is up: the follower waits for the leader to connect, the leader retries connecting
    ("killed", "leader", "train.dask_machine_start"), ("killed", "follower", "train.dask_machine_start"),
])
def test_a_machine_lost_mid_training_fails_by_name_and_the_same_cluster_trains_again(snapshot, how, rank, point,
                                                                                   monkeypatch):
    """A machine SIGKILLed after its first round (or before it connected), or raising after its third (its
    process alive): the training fails at once with ``ClusterTrainingError`` naming the machine, no machine is left
    waiting on the others (the driver calls them off: the leader's word, each machine's LightGBM links broken, and
    a machine still setting up LightGBM's network ends its process), and the same cluster then trains the model it
    trained before. Before, the other machines waited 600 s (the leader's word), for ever (LightGBM spinning on a
    closed link, or accepting a connection that never comes), about 2 min (LightGBM retrying a connection), or a
    re-run on the same workers failed ("Broken pipe"). Then the scheduler holds nothing of either training (a
    killed machine's queues and the call-off event stayed for the cluster's life)."""
    from distributed import Client, LocalCluster

    monkeypatch.setattr(dask_training, "FORGET_AFTER_S", 2.0)
    spec = load_specs()["flight_delay"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        before = dask_training.train_on_dask(snapshot, spec, client, FAST)
        workers = dask_training.placed_workers(client)
        target = workers[0] if rank == "leader" else workers[1]
        client.run(_fail_here, how, point, workers=[target])
        with pytest.raises(dask_training.ClusterTrainingError, match=r"machine [01] of 2 \(tcp://.*\) failed: "):
            dask_training.train_on_dask(snapshot, spec, client, FAST)
        assert _idle(client)  # (a killed worker is back: its nanny started a new one)
        client.run(_heal)
        again = dask_training.train_on_dask(snapshot, spec, client, FAST)
        left = _left_on_scheduler(client)
    assert left == {"queues": [], "events": []}
    assert _without_parameters(again.model_text) == _without_parameters(before.model_text)
    assert [t["rounds"] for t in again.trials] == [t["rounds"] for t in before.trials]


def test_on_two_workers_the_same_cluster_trains_the_same_model_every_run(snapshot):
    """Part i of the rows on the i-th worker, which is LightGBM's rank i: the parts, and so the model, do not
    depend on the scheduler's order (which changed from run to run)."""
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    models = []
    for _ in range(2):  # a new cluster each time: new worker addresses, new ports
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            models.append(dask_training.train_on_dask(snapshot, spec, client, FAST))
            assert _left_on_scheduler(client) == {"queues": [], "events": []}  # (each trial had its own)
    assert _without_parameters(models[0].model_text) == _without_parameters(models[1].model_text)
    assert "[num_machines: 2]" in models[0].model_text  # trained data-parallel on both workers


def _lock_leases(dask_scheduler=None) -> int:
    """The leases of the trainings' lock the scheduler holds."""
    return len(dask_scheduler.extensions["semaphores"].leases.get(dask_training.TRAINING_LOCK, ()))


@pytest.mark.timeout(600)
def test_four_trainings_at_once_on_one_cluster_each_train_the_model_they_train_alone(platform, snapshot, tmp_path):
    """Four drivers (two runs' candidate steps of each of two specs) train on one cluster of two one-thread workers
    at the same time. Each training runs a machine on both workers, holding a thread until its network is done: at
    once, two trainings could each hold a thread the other waits for. They take the cluster one at a time (the
    trainings' lock, which the others wait for and say so), and each trains the model its spec trains alone on the
    cluster. Without the lock they never finished: each waited until LightGBM ended a worker's process, about 2 min
    later, and then failed."""
    import threading

    from distributed import Client, LocalCluster

    specs = load_specs()
    paths = {"flight_delay": snapshot,
             "flight_cancellation": _snapshot_of(platform, "flight_cancellation", tmp_path / "cancellation.parquet")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            alone = {name: dask_training.train_on_dask(path, specs[name], client, FAST).model_text
                     for name, path in paths.items()}
        results, heard = {}, []

        def train(i: int, name: str) -> None:
            with Client(cluster.scheduler_address) as own:  # a driver of its own, as each run's step has
                try:
                    results[i] = dask_training.train_on_dask(paths[name], specs[name], own, FAST,
                                                             on_wait=heard.append).model_text
                except Exception as e:
                    results[i] = e

        drivers = [threading.Thread(target=train, args=(i, name), daemon=True)
                   for i, name in enumerate(list(paths) * 2)]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join(timeout=300)
        assert not any(d.is_alive() for d in drivers), "a training did not end"
        with Client(cluster) as client:
            assert _idle(client)
            assert client.run_on_scheduler(_lock_leases) == 0
            assert _left_on_scheduler(client) == {"queues": [], "events": []}
    for i, name in enumerate(list(paths) * 2):
        assert isinstance(results[i], str), results[i]
        assert _without_parameters(results[i]) == _without_parameters(alone[name]), name
    assert heard and all(dask_training.TRAINING_LOCK in h for h in heard)  # they did wait for one another


_KILLED_DRIVER = """
import sys
from pathlib import Path
from distributed import Client
from batch_platform.lib import dask_training, training
from batch_platform.lib.specs import load_specs
if __name__ == "__main__":
    with Client(sys.argv[1]) as client:
        dask_training.train_on_dask(Path(sys.argv[2]), load_specs()["flight_delay"], client,
                                    training.TrainConfig(n_trials=50, max_rounds=600, early_stopping_rounds=600))
"""


@pytest.mark.timeout(300)
def test_a_driver_killed_while_it_holds_the_cluster_does_not_keep_the_next_training_waiting(snapshot, tmp_path):
    """The process of a candidate step SIGKILLed while its training holds the cluster (the trainings' lock, its
    machines mid-trial): the scheduler drops its lease when it stops refreshing it, and the next training, which
    waits for it, trains its model. (Lease time-outs shortened here: 4 s, checked every second.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    import dask
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    timeouts = {"distributed.scheduler.locks.lease-timeout": "4s",
                "distributed.scheduler.locks.lease-validation-interval": "1s"}
    script = tmp_path / "driver.py"
    script.write_text(_KILLED_DRIVER)
    with dask.config.set(timeouts), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        driver = subprocess.Popen([sys.executable, str(script), cluster.scheduler_address, str(snapshot)],
                                  env={**os.environ, "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "4s"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 120
            while not (client.run_on_scheduler(_lock_leases) == 1 and all(client.run(_executing).values())):
                assert driver.poll() is None and time.monotonic() < end, "the driver never trained on the cluster"
                time.sleep(0.2)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        heard = []
        model = dask_training.train_on_dask(snapshot, spec, client, FAST, on_wait=heard.append)
        assert heard  # it waited for the killed driver's lease
        assert "[num_machines: 2]" in model.model_text
        assert client.run_on_scheduler(_lock_leases) == 0
        assert _idle(client)


def _trees(model_text: str) -> list[dict[str, str]]:
    return [dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
            for block in model_text.split("end of trees")[0].split("Tree=")[1:]]


def _test_auc(model_text: str, layout) -> float:
    from batch_platform.lib import evaluation

    X = np.vstack(list(WindowRows(layout, "test").batches()))
    return evaluation.metrics(layout.labels[layout.positions("test")], training.load_booster(model_text).predict(X),
                              regression=False)["roc_auc"]


def test_on_two_workers_every_machine_bins_as_the_local_path(snapshot):
    """The first tree (each split from the histograms of both workers' rows) is the local model's first tree: the
    same features, thresholds and leaf values. With each worker binning from its own rows (lightgbm.dask's
    estimators) the thresholds differed."""
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    config = training.TrainConfig(n_trials=1, max_rounds=40)
    local = training.train_snapshot(snapshot, spec, config)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_dask = dask_training.train_on_dask(snapshot, spec, client, config)
    assert "[num_machines: 2]" in on_dask.model_text
    mine, theirs = _trees(local.model_text)[0], _trees(on_dask.model_text)[0]
    for key in ("split_feature", "threshold", "decision_type", "left_child", "right_child"):
        assert theirs[key] == mine[key], key
    np.testing.assert_allclose(np.array(theirs["leaf_value"].split(), float),
                               np.array(mine["leaf_value"].split(), float), rtol=1e-9)


def test_on_two_workers_the_models_are_of_the_local_paths_quality(snapshot):
    """Equal quality, measured over seeds (each seed its own parameter sets, feature fractions and bin sample):
    LightGBM's data-parallel learner counts a new leaf's rows from its hessians, so its trees part from the serial
    learner's once a count decides a split, and one model's test AUC then differs from the local one's as another
    seed's does (here up to 0.02 either way). Over ten seeds the mean test AUC is within 0.005 of the local path's;
    with each worker binning from its own rows it was 0.008 below (seven seeds of ten below)."""
    from distributed import Client, LocalCluster

    spec = load_specs()["flight_delay"]
    layout = read_layout(snapshot, spec)
    gaps = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for seed in range(1, 11):
            config = training.TrainConfig(n_trials=2, max_rounds=80, seed=seed)
            local = _test_auc(training.train_snapshot(snapshot, spec, config).model_text, layout)
            gaps.append(_test_auc(dask_training.train_on_dask(snapshot, spec, client, config).model_text, layout)
                        - local)
    assert abs(np.mean(gaps)) <= 0.005, gaps
    assert 0 < sum(g < 0 for g in gaps) < len(gaps), gaps  # models differ, and not all one way


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
            # the gate judges it as any candidate: against a champion trained locally on the same rows, a model of
            # equal quality falls either side of it (see the test above), so a refusal is the gate's verdict
            assert outcome.success or all("gate_vs_champion" in e for e in outcome.errors), outcome.errors
            metadata = instance.get_latest_materialization_event(candidate_key(spec)).asset_materialization.metadata
    assert metadata["trained_on"].value == cluster.scheduler_address
    assert "[num_machines: 2]" in Path(metadata["artifact"].value).read_text()


def _step_failure(instance: dg.DagsterInstance, run_id: str, step: dg.AssetKey) -> str:
    """The error of the step that materializes ``step`` in the run, with its causes (the op's own exception is the
    cause of Dagster's); empty when that step did not fail."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return "\n".join(e.dagster_event.step_failure_data.error.to_string() for e in events
                     if e.step_key == step.to_python_identifier())


def test_a_machine_lost_while_the_candidate_step_trains_fails_the_step_by_name_and_loses_nothing(
        scoring_env, monkeypatch, tmp_path):  # noqa: F811
    """The candidate step in a process of its own, as a launched run executes it (Dagster's CLI, its multiprocess
    executor), on a cluster whose follower is SIGKILLed at its first round: the step fails with ``ClusterTrainingError``
    naming the machine, before anything is saved or registered (versions, aliases and model files as they were);
    the next run on the same cluster trains, registers and gates a candidate trained on it."""
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    from batch_platform import settings
    from batch_platform.defs.training.assets import training_set_key
    from batch_platform.defs.training.models import candidate_key

    spec, registry = scoring_env["spec"], scoring_env["registry"]
    monkeypatch.setenv("DAGSTER_HOME", str(project_dagster_home(tmp_path)))
    artifacts = Path(scoring_env["env"][settings.ARTIFACTS_VAR])

    def state():
        return ([(v.version, v.sha256) for v in registry.list_versions(spec.name)], registry.aliases(spec.name),
                sorted(p.name for d in ("models", "drift_references") for p in (artifacts / d / spec.name).iterdir()))

    def materialize() -> tuple[str, subprocess.CompletedProcess]:
        keys = ",".join(k.to_user_string() for k in (training_set_key(spec), candidate_key(spec)))
        child = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                                "batch_platform.definitions", "--select", keys], capture_output=True, text=True,
                               timeout=600)
        with dg.DagsterInstance.get() as instance:
            return instance.get_runs(limit=1)[0].run_id, child

    before = state()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(settings.DASK_ADDRESS_VAR, cluster.scheduler_address)
        with Client(cluster) as client:
            follower = dask_training.placed_workers(client)[1]
            client.run(_fail_here, "killed", "train.dask_follower_round", workers=[follower])
        failed_run, failed = materialize()
        with dg.DagsterInstance.get() as instance:
            error = _step_failure(instance, failed_run, candidate_key(spec))
        assert failed.returncode != 0, failed.stderr[-3000:]
        assert re.search(r"ClusterTrainingError: machine [01] of 2 \(tcp://.*\) failed: ", error), error
        assert state() == before  # nothing saved, registered or moved
        with Client(cluster) as client:
            assert _idle(client)  # (the killed worker is back: its nanny started a new one)
        run_id, child = materialize()
        with dg.DagsterInstance.get() as instance:
            # (the gate's check, a step of its own, may refuse the candidate: its verdict)
            assert not _step_failure(instance, run_id, candidate_key(spec)), child.stderr[-3000:]
            metadata = instance.get_latest_materialization_event(candidate_key(spec)).asset_materialization.metadata
    assert metadata["trained_on"].value == cluster.scheduler_address
    assert metadata["new_version"].value and metadata["version"].value == before[0][-1][0] + 1
    assert "[num_machines: 2]" in Path(metadata["artifact"].value).read_text()


@pytest.mark.timeout(180)
def test_a_cluster_with_more_workers_than_train_rows_trains_on_as_many_machines_as_rows(snapshot, tmp_path):
    """A train window of two rows on three workers: the third worker would hold an empty part, which LightGBM
    cannot bin, so the job runs on two machines."""
    from distributed import Client, LocalCluster

    from batch_platform.lib.training_set import LABEL, SPLIT

    spec = load_specs()["flight_delay"]
    table = pq.read_table(snapshot)
    split, label = table[SPLIT].to_pylist(), table[LABEL].to_pylist()
    first = {}  # the first train row of each label class
    for i, (s, y) in enumerate(zip(split, label)):
        if s == "train" and y is not None:
            first.setdefault(y, i)
    assert len(first) == 2
    tiny = tmp_path / "two_train_rows.parquet"
    pq.write_table(table.take([i for i, s in enumerate(split) if s != "train" or i in first.values()]), tiny)
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = dask_training.train_on_dask(tiny, spec, client, training.TrainConfig(n_trials=1, max_rounds=5))
    assert "[num_machines: 2]" in model.model_text


@pytest.mark.timeout(900)
def test_runs_the_daemon_launches_train_their_candidates_on_the_cluster_its_environment_names(
        scoring_env, monkeypatch, tmp_path):  # noqa: F811
    """As from the UI's Materialize: two runs of ``train_and_gate`` queued on the instance and launched by the real
    daemon (``dagster-daemon run`` on the project's workspace: its code server and the run workers it starts have
    ``BATCH_PLATFORM_DASK_ADDRESS`` from its environment), on one cluster of two one-thread workers: each run trains
    and registers a candidate there (the gate's check then judges it). (Their candidate steps may overlap or not:
    their training sets take the warehouse pool in turn; overlapping trainings are the test above's.)"""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from distributed import LocalCluster

    from batch_platform import settings
    from batch_platform.defs.training.models import candidate_key
    from batch_platform.lib.specs import SPECS_DIR_VAR

    root = Path(__file__).resolve().parent.parent
    spec, registry = scoring_env["spec"], scoring_env["registry"]
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(Path(scoring_env["env"][SPECS_DIR_VAR]) / f"{spec.name}.yaml", specs)  # one spec: a run each
    monkeypatch.setenv("DAGSTER_HOME", str(project_dagster_home(tmp_path)))
    monkeypatch.setenv(SPECS_DIR_VAR, str(specs))
    bin_dir = Path(sys.executable).parent
    workspace = str(root / "workspace.yaml")
    versions_before = [v.version for v in registry.list_versions(spec.name)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(settings.DASK_ADDRESS_VAR, cluster.scheduler_address)
        with dg.DagsterInstance.get() as instance:  # the instance's storage, before two processes race to create it
            instance.get_run_records(limit=1)
        log = (tmp_path / "daemon.log").open("w")
        daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], cwd=root,
                                  env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for _ in range(2):  # queued, as the UI queues a run: the daemon's run coordinator launches it
                launch = subprocess.run([str(bin_dir / "dagster"), "job", "launch", "-w", workspace, "-l",
                                         "batch_platform", "-j", "train_and_gate"], cwd=root, capture_output=True,
                                        text=True, timeout=300)
                assert launch.returncode == 0, launch.stderr[-3000:]
            end = time.monotonic() + 600
            with dg.DagsterInstance.get() as instance:
                while True:
                    runs = instance.get_runs()
                    if all(r.is_finished for r in runs):
                        break
                    assert daemon.poll() is None, "the daemon exited"
                    assert time.monotonic() < end, [(r.run_id[:8], r.status) for r in runs]
                    time.sleep(2)
                # every step succeeded but the gate's check, which may refuse the candidate (its verdict, which fails
                # the run: a blocking check)
                failed = [e.step_key for r in runs for e in instance.all_logs(
                    r.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
                assert len(runs) == 2 and all(k.endswith("_gate_vs_champion") for k in failed), failed
                trained = [e.asset_materialization.metadata for r in runs for e in instance.all_logs(
                    r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                    if e.dagster_event.asset_key == candidate_key(spec)]
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
            log.close()
    assert len(trained) == 2 and all(m["trained_on"].value == cluster.scheduler_address for m in trained)
    assert all("[num_machines: 2]" in Path(m["artifact"].value).read_text() for m in trained)
    assert sorted(m["version"].value for m in trained) == [max(versions_before) + 1, max(versions_before) + 2]
