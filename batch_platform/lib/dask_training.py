"""Training on a Dask cluster: LightGBM's data-parallel learner (``tree_learner=data``) across the cluster's workers,
each holding its part of the train window of a training-set snapshot, every one binning its rows against the bins
the local path would use.

The same search as :func:`training.train_snapshot` -- the same parameter sets, the same model matrix
(:func:`snapshot_matrix.group_matrix`: each worker reads its part of the train window from the snapshot), the best
by the spec's metric on the validation window. Every round up to ``max_rounds`` is trained, the validation window is
scored after each on the driver (:func:`validation_curve`), and the model is cut where LightGBM's early stopping
would have stopped (:func:`early_stopping_iteration`).

**The bins.** ``lightgbm.dask``'s estimators (``DaskLGBMClassifier`` / ``DaskLGBMRegressor``) build each worker's
``Dataset`` from that worker's rows alone: LightGBM then bins each feature on one worker's rows and shares those
bins with the others. On the tests' replay that cost the model 0.008 of test AUC against the local path on average
over ten seeds (seven of ten below it). Here every worker bins against one reference ``Dataset`` built from
LightGBM's own sample of the whole train window (:func:`bin_sample`, read on the driver, at most
``bin_construct_sample_cnt`` rows): the local path's bins. On the tests' replay the first tree is then the local
model's first tree, and the mean gap over the same ten seeds is -0.0005. The network set-up is ``lightgbm.dask``'s
(a port held open on each worker until LightGBM binds it; ``machines``, ``num_machines``, ``local_listen_port``);
only the ``Dataset`` each machine trains on differs.

**What still differs.** LightGBM's data-parallel learner sums every machine's histograms, so each split is chosen
from the whole window, but it counts a new leaf's rows from the split's hessians rather than the rows themselves
(the serial learner counts them). Where a ``min_data_in_leaf``, ``min_data_per_group`` or ``cat_smooth`` count
decides between two splits the two learners can part, and from there the trees differ as another seed's would: on
this weak-signal replay one model's test AUC differs from the local model's by up to 0.026 either way, as the local
path's own seeds spread. Equal quality is therefore measured over seeds (``tests/test_dask_training.py``;
``bench/RESULTS_DASK_QUALITY.md``: over 30 seeds the mean gap is +0.0004 at x1, -0.0030 at x10).

On one worker the model is the local one, byte for byte, when the train window fits in ``bin_construct_sample_cnt``
rows (beyond it LightGBM seeds its feature bundling with the row count: the bins are the same, the bundles may
differ). Part ``i`` of the rows is read on the ``i``-th worker (by address) and is LightGBM's rank ``i``, so the
same cluster size trains the same model run after run. The candidate assets train here when
``BATCH_PLATFORM_DASK_ADDRESS`` names a scheduler (``defs/resources.py``, ``DaskResource``).

The snapshot must be readable at the same path on every worker (a shared or object-store file system on a real
cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch_platform.lib import training
from batch_platform.lib.snapshot_matrix import (SnapshotLayout, WindowRows, as_lightgbm_sequence, group_matrix,
                                                read_layout)
from batch_platform.lib.specs import ModelSpec

if TYPE_CHECKING:
    from distributed import Client


def part_matrix(path: str, groups: list[tuple[int, np.ndarray]], part: int, parts: int, features: list[str],
                categorical: list[str], categories: dict[str, list], nullable_ints: frozenset[str]) -> np.ndarray:
    """Rows ``part, part + parts, part + 2 * parts, ...`` of a window (``groups``: ``WindowRows.row_groups``) as
    the model matrix, read a row group at a time. Every ``parts``-th row, not a stretch: the rows are in key (and so
    day) order, and a worker holding only January would hold none of February's days."""
    import pyarrow.parquet as pq

    file, out, offset = pq.ParquetFile(path), [], 0
    for group, local in groups:
        mine = local[(np.arange(offset, offset + len(local)) % parts) == part]
        offset += len(local)
        if len(mine):
            out.append(group_matrix(file, group, mine, features, categorical, categories, nullable_ints))
    return np.vstack(out) if out else np.empty((0, len(features)))


def bin_sample(layout: SnapshotLayout, params: dict) -> np.ndarray:
    """The rows of the train window the local path bins the features from: LightGBM's own sample of
    ``bin_construct_sample_cnt`` rows, drawn by ``data_random_seed`` from the window's row count as ``lgb.Dataset``
    draws it for a ``Sequence``, as the model matrix. Its size is bounded by ``bin_construct_sample_cnt``, not by
    the window."""
    import lightgbm as lgb

    rows = as_lightgbm_sequence(WindowRows(layout, "train"))
    # the sampler lgb.Dataset calls for a Sequence (LightGBM's LGBM_SampleIndices)
    indices = lgb.Dataset(None, params=params)._create_sample_indices(total_nrow=len(rows))
    return np.vstack([rows[int(i)] for i in indices]) if len(indices) else np.empty((0, len(layout.features)))


class _PortLease:
    """A port held open on a worker until its LightGBM machine binds it, as ``lightgbm.dask`` holds its ports: the
    ports are sent to every machine before training starts, and no other process takes one meanwhile. It lives in
    the worker's memory, a future's result that is never sent anywhere."""

    def __init__(self):
        import socket

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("", 0))
        self.port = self.socket.getsockname()[1]

    def release(self) -> int:
        self.socket.close()
        return self.port


def _port(lease: _PortLease) -> int:
    return lease.port


def _train_machine(X: np.ndarray, labels: np.ndarray, sample: np.ndarray, features: list[str],
                   categorical: list[str], params: dict, rounds: int, machines: str, lease: _PortLease) -> str:
    """One machine of the data-parallel training, on its worker: its rows binned against the reference built from
    ``sample`` (every machine, and the local path, the same bins), then ``lgb.train`` with the other machines. The
    model's text."""
    import lightgbm as lgb
    from distributed import get_worker

    params = {**params, "num_threads": get_worker().state.nthreads}
    reference = lgb.Dataset(sample, feature_name=features, categorical_feature=categorical, params=params)
    rows = lgb.Dataset(X, label=labels, reference=reference, feature_name=features, categorical_feature=categorical,
                       params=params).construct()  # binned before the network is up: no machine waits on another
    network = {"tree_learner": "data", "machines": machines, "num_machines": len(machines.split(",")),
               "local_listen_port": lease.release()}
    booster = lgb.train({**params, **network}, rows, num_boost_round=rounds)
    try:
        return booster.model_to_string()
    finally:
        booster.free_network()


def placed_workers(client: Client) -> list[str]:
    """The cluster's worker addresses, sorted: part ``i`` of the rows is read on, and trained by, the ``i``-th."""
    return sorted(client.scheduler_info()["workers"])


def train_data_parallel(client: Client, workers: list[str], parts: list, labels: list, sample,
                        features: list[str], categorical: list[str], params: dict, rounds: int) -> str:
    """``rounds`` of LightGBM's data-parallel learner across ``workers``: machine ``i`` trains on ``parts[i]`` and
    ``labels[i]`` (futures held by ``workers[i]``) and is ranked ``i``. The model's text (rank 0's: every machine
    ends with the same trees)."""
    from urllib.parse import urlparse

    def on(worker, fn, *args):  # not pure: each call is one machine of one network job
        return client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False)

    leases = [on(w, _PortLease) for w in workers]
    ports = client.gather([on(w, _port, lease) for w, lease in zip(workers, leases)])
    machines = ",".join(f"{urlparse(w).hostname}:{port}" for w, port in zip(workers, ports))
    texts = [on(w, _train_machine, X, y, sample, features, categorical, params, rounds, machines, lease)
             for w, X, y, lease in zip(workers, parts, labels, leases)]
    return client.gather(texts)[0]


def early_stopping_iteration(curve, rounds: int, higher_better: bool) -> tuple[int, float]:
    """``(iteration (1-based), its value)``: what LightGBM's ``early_stopping(rounds)`` keeps for this validation
    curve (an iterable, consumed only as far as needed): the first best value, once ``rounds`` iterations in a row
    have not improved on it (or the curve ends)."""
    best, best_i = None, 0
    for i, value in enumerate(curve):
        if best is None or (value > best if higher_better else value < best):
            best, best_i = value, i
        elif i - best_i >= rounds:
            break
    return best_i + 1, float(best)


def validation_curve(booster, layout: SnapshotLayout, spec: ModelSpec):
    """The spec's gate metric on the whole validation window after each boosting iteration (a generator), computed
    on the driver over every row (one tree's raw scores added per iteration; the window's matrix is held, read a row
    group at a time): a machine of the data-parallel training sees only its own part of any window."""
    from batch_platform.lib import evaluation

    X = np.vstack(list(WindowRows(layout, "validation").batches()))
    y = layout.labels[layout.positions("validation")]
    raw = np.zeros(len(y))
    for k in range(booster.current_iteration()):
        raw += booster.predict(X, start_iteration=k, num_iteration=1, raw_score=True)
        p = raw if spec.is_regression else 1.0 / (1.0 + np.exp(-raw))
        yield evaluation.metrics(y, p, regression=spec.is_regression)[spec.gate.metric]


def train_on_dask(path: Path, spec: ModelSpec, client: Client,
                  config: training.TrainConfig = training.TrainConfig()) -> training.TrainedModel:
    """:func:`training.train_snapshot` on the cluster ``client`` is connected to (see the module docstring)."""
    import lightgbm as lgb

    layout = read_layout(path, spec)
    y_train, y_val = (layout.labels[layout.positions(w)] for w in ("train", "validation"))
    training._check_windows(spec, y_train[~pd.isna(y_train)], y_val[~pd.isna(y_val)])
    base = training._base_params(spec, config)
    workers = placed_workers(client)[:len(y_train)]  # no machine without rows (LightGBM cannot bin an empty part)
    n, groups = len(workers), WindowRows(layout, "train").row_groups
    # read once, each part on its worker, for every trial; the bin sample sent to every worker once
    parts = [client.submit(part_matrix, str(layout.path), groups, i, n, layout.features, layout.categorical,
                           layout.categories, layout.nullable_ints, workers=[w], allow_other_workers=False,
                           pure=False) for i, w in enumerate(workers)]
    labels = [client.scatter(y_train[i::n], workers=[w]) for i, w in enumerate(workers)]
    sample = client.scatter(bin_sample(layout, base), broadcast=True)
    higher_better = spec.gate.metric in ("roc_auc", "average_precision")
    best: training.TrainedModel | None = None
    trials = []
    try:
        for point in training.candidate_params(config):
            params = {**base, **point}
            text = train_data_parallel(client, workers, parts, labels, sample, layout.features, layout.categorical,
                                       params, config.max_rounds)
            booster = lgb.Booster(model_str=text)
            iteration, score = early_stopping_iteration(validation_curve(booster, layout, spec),
                                                        config.early_stopping_rounds, higher_better)
            trials.append({"params": point, "best_iteration": iteration, "validation_metric": score})
            if best is None or (score > best.validation_metric if higher_better else score < best.validation_metric):
                # the categories travel with the model, as from a DataFrame (LightGBM's pandas_categorical)
                booster.pandas_categorical = [layout.categories[c] for c in layout.categorical]
                best = training.TrainedModel(
                    model_text=booster.model_to_string(num_iteration=iteration), params=params,
                    best_iteration=iteration, features=layout.features, categorical=layout.categorical,
                    validation_metric=score,
                )
    finally:
        client.cancel([*parts, *labels, sample])
    assert best is not None
    best.trials = trials
    return best
