"""Training on a Dask cluster: LightGBM's data-parallel learner (``tree_learner=data``) across the cluster's workers,
each holding its part of the train window of a training-set snapshot, every one binning its rows against the bins
the local path would use.

The same search as :func:`training.train_snapshot` -- the same parameter sets, the same model matrix
(:func:`snapshot_matrix.group_matrix`: each worker reads its part of the train window from the snapshot), the best
by the spec's metric on the validation window -- and the same early stopping. **Early stopping on a cluster:** the
first machine (rank 0, the *leader*) also holds the whole validation window, read on its worker, and runs
LightGBM's ``early_stopping`` on it with the spec's LightGBM metric, as the local path does. After every round it
tells each other machine whether to train another (a ``distributed.Queue`` per machine, through the scheduler), so
every machine stops after the same round: one machine's decision, not several that would have to agree (a machine
that stopped alone would leave the others waiting on its histograms). Only the rounds up to the stop are trained.

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

**A machine lost.** A machine whose worker dies or whose LightGBM raises fails the training at once with
:class:`ClusterTrainingError` naming it, and the driver calls the others off: the leader's queue word for a machine
waiting on it, and a ``distributed.Event`` on which every machine breaks its LightGBM links (:class:`_CallOffWatch`) for
one waiting on a lost machine's histograms, as LightGBM would spin on a closed link for ever. A machine called off while
LightGBM's network is still being set up (a machine lost before it connected) ends its worker process, which its nanny
restarts: LightGBM cannot be interrupted there (it retries a connection for about 2 min and then ends the process
itself, or waits on for a connection that never comes). A worker that leaves the cluster fails the training at once too
(:func:`_await_machines`: tasks bound to it would wait for it for ever). No worker is left busy, and the same cluster
trains again. The scheduler drops a training's queues as its machines finish, and a failed training's queues and event
``FORGET_AFTER_S`` later (a killed machine never releases its own).

**One training at a time.** Every training runs a machine on every worker, each holding its worker's thread until
the network is done, so two at once could deadlock (:data:`TRAINING_LOCK`): a training holds the cluster from
binning its rows to its last trial, and another (a second run's candidate step) waits for it.

The snapshot must be readable at the same path on every worker (a shared or object-store file system on a real
cluster).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch_platform.lib import faults, training
from batch_platform.lib.dask_workers import current_workers
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


class ClusterTrainingError(RuntimeError):
    """Training on the Dask cluster failed: a machine's worker died, a machine raised, the leader went silent, or
    the machines disagreed. Every machine of the training has then been told to stop (none is left waiting on the
    others), so the same cluster can train again."""


class LeaderLostError(ClusterTrainingError):
    """A machine of a data-parallel training heard nothing from the leader (rank 0) after a round."""


class TrainingCalledOffError(ClusterTrainingError):
    """A machine of a data-parallel training was told to stop because another machine failed."""


class MachinesDisagreeError(ClusterTrainingError):
    """The machines of one data-parallel training stopped after different rounds."""


ANOTHER, STOP, CALL_OFF = "another", "stop", "call off"  # the words a machine hears after each round
FORGET_AFTER_S = 30.0
"""How long the scheduler keeps a failed training's queues and call-off event: every machine still running is
called off within about a second (its watch waits on the event a second at a time), and a killed machine never
releases its queues."""


class _RoundOrders:
    """The word to the other machines after each round: the leader's "another" or "stop", or the driver's (or the
    failing leader's) "call off" when a machine failed. A ``distributed.Queue`` per machine (named by the driver),
    read in order. A machine waits at most ``timeout`` seconds for it (the leader's validation scoring of one
    round), then fails with :class:`LeaderLostError` rather than wait for ever."""

    def __init__(self, names: list[str], timeout: float, client: Client | None = None):
        from distributed import Queue

        self.queues, self.timeout = [Queue(n, client=client) for n in names], timeout

    def send(self, word: str) -> None:
        for queue in self.queues:
            queue.put(word)

    def receive(self) -> bool:
        """Whether to stop after the round just trained."""
        try:
            word = self.queues[0].get(timeout=self.timeout)
        except TimeoutError as e:
            raise LeaderLostError(f"no word from the leading machine in {self.timeout:.0f} s") from e
        if word == CALL_OFF:
            raise TrainingCalledOffError("the training was called off: another machine failed")
        return word == STOP

    def close(self) -> None:
        """Release this holder's reference to the queues: the scheduler drops a queue, and any word left in it,
        once every holder has released it (it keeps a queue for as long as one holds it)."""
        for queue in self.queues:
            with contextlib.suppress(Exception):  # (the scheduler gone, and its queues with it)
                queue.close()


def _leading(stopper, orders: _RoundOrders):
    """The leader's callback: LightGBM's early stopping (``stopper``), then the word to the other machines (``stop``
    when it stopped, on the last round too)."""
    import lightgbm as lgb

    def lead(env) -> None:
        faults.point("train.dask_leader_round")
        try:
            stopper(env)
        except lgb.callback.EarlyStopException:
            orders.send(STOP)
            raise
        orders.send(ANOTHER)

    return lead


def _following(orders: _RoundOrders):
    """Another machine's callback: the leader's word on the round just trained."""
    import lightgbm as lgb

    def follow(env) -> None:
        faults.point("train.dask_follower_round")
        if orders.receive():
            raise lgb.callback.EarlyStopException(env.iteration, [])

    return follow


class _CallOffWatch:
    """While a machine trains, a thread that waits for the driver's call-off (a ``distributed.Event``, set when any
    machine of the training failed) and then breaks this machine's LightGBM links. LightGBM reads from a link until
    it has every byte it expects and takes a peer's closed or reset connection for zero bytes: a machine whose peer
    died or left the network spins in that read for ever, and its Dask worker thread with it. A link whose
    descriptor now reads ``/dev/null`` fails the read, and ``lgb.train`` raises.

    The links are found before the first round, while they are up (a reset connection no longer says where it
    led): this process's TCP connections to the machines' ports or to its own listening port. A descriptor is
    replaced only if it still holds the same socket, and only until :meth:`stop` (called before the network is
    freed). Called off before the first round, while the network is being set up, the machine ends its process
    (:meth:`_end_process`). Also an ``lgb.train`` callback, run before each round."""

    before_iteration = True

    def __init__(self, call_off: str, machines: str, port: int):
        import socket
        import threading

        from distributed import Event, get_client

        self.event = Event(call_off, client=get_client())
        self.port, self.links = port, None
        self.peers = {(socket.gethostbyname(host), int(p))
                      for host, p in (machine.rsplit(":", 1) for machine in machines.split(","))}
        self.lock, self.watching = threading.Lock(), True
        self.thread = threading.Thread(target=self._watch, name="batch-platform-call-off", daemon=True)
        self.thread.start()

    def __call__(self, env) -> None:
        import os

        import psutil

        if self.links is None:  # (before the first round: the network is up; none on one machine)
            found = {link.fd for link in psutil.Process().net_connections(kind="tcp")
                     if link.fd >= 0 and link.raddr and link.status == psutil.CONN_ESTABLISHED
                     and (link.laddr.port == self.port or tuple(link.raddr) in self.peers)}
            with self.lock:
                self.links = {fd: os.fstat(fd).st_ino for fd in found}

    def _watch(self) -> None:
        import os
        import socket

        while self.watching:
            try:
                if self.event.wait(timeout=1.0):
                    break
            except Exception:  # the scheduler gone: the machines fail by their own links or the leader's word
                return
        with self.lock, open(os.devnull, "rb") as null:
            if not self.watching:
                return
            if self.links is None:
                self._end_process()
            for fd, inode in self.links.items():
                with contextlib.suppress(OSError):  # (closed meanwhile)
                    if os.fstat(fd).st_ino == inode:
                        link = socket.socket(fileno=os.dup(fd))
                        os.dup2(null.fileno(), fd)  # LightGBM's next read fails
                        with link:
                            link.shutdown(socket.SHUT_RDWR)  # and one under way returns

    @staticmethod
    def _end_process() -> None:
        """Called off while LightGBM's network is being set up (a machine lost before it connected), where nothing
        interrupts LightGBM: a machine connecting to a lost one retries for about 2 min and then ends the process
        (a thread of LightGBM's own fails), and one waiting for a lost one to connect waits on (the tests saw no end
        to it). It ends now instead, and the worker's nanny starts a new one."""
        import os
        import sys

        print("batch-platform: this Dask training was called off while LightGBM's network was being set up, which "
              "cannot be interrupted: ending this worker process (its nanny starts a new one)", file=sys.stderr,
              flush=True)
        os._exit(1)

    def stop(self) -> None:
        with self.lock:
            self.watching = False


class _MachineData:
    """One machine's binned rows, built once on its worker for every trial of a search and kept in that worker's
    memory (a future's result never sent anywhere): its part of the train window binned against the reference built
    from ``sample`` (every machine, and the local path, the same bins) and, on the leader, the validation window
    binned likewise. Once they are built the worker holds the binned rows only: the matrices they were read into
    are released."""

    def __init__(self, X: np.ndarray, labels: np.ndarray, sample: np.ndarray, features: list[str],
                 categorical: list[str], params: dict, valid_X: np.ndarray | None = None,
                 valid_labels: np.ndarray | None = None):
        import lightgbm as lgb
        from distributed import get_worker

        self.params = {**params, "num_threads": get_worker().state.nthreads}
        kwargs = dict(feature_name=features, categorical_feature=categorical, params=self.params)
        reference = lgb.Dataset(sample, **kwargs)
        self.rows = lgb.Dataset(X, label=labels, reference=reference, **kwargs).construct()
        self.valid = (None if valid_X is None else
                      lgb.Dataset(valid_X, label=valid_labels, reference=self.rows, **kwargs).construct())


def _train_machine(data: _MachineData, params: dict, rounds: int, stopping_rounds: int, machines: str,
                   lease: _PortLease, queues: list[str], call_off: str, timeout: float) -> dict:
    """One machine of the data-parallel training, on its worker: ``lgb.train`` on its binned rows (``data``, built
    before the network is up: no machine waits on another to bin) with the other machines. The leader has the
    validation window and ``queues`` to every other machine; another machine has its own queue. The rounds it
    trained, and the leader's model (cut at the best round), best round and validation metric.

    When any machine fails the driver calls the others off (``call_off``, :class:`_CallOffWatch`): a machine
    waiting on a lost machine's histograms fails then, rather than spin in LightGBM's read for ever. A failing
    machine leaves LightGBM's network at once, a failing leader calls the others off too, and it raises
    :class:`ClusterTrainingError` without the failure's frames: they hold the booster, and with it this worker's
    network, for as long as Dask keeps the error (a booster freed later would close a later training's network)."""
    import traceback

    import lightgbm as lgb

    params = {**params, "num_threads": data.params["num_threads"]}
    orders, counter = _RoundOrders(queues, timeout), training.RoundCounter()
    leads = data.valid is not None
    if leads:
        valid_sets, callback = [data.valid], _leading(lgb.early_stopping(stopping_rounds, verbose=False), orders)
    else:
        valid_sets, callback = None, _following(orders)
    port = lease.release()
    network = {"tree_learner": "data", "machines": machines, "num_machines": len(machines.split(",")),
               "local_listen_port": port}
    watch, failure = _CallOffWatch(call_off, machines, port), None
    faults.point("train.dask_machine_start")
    try:
        booster = lgb.train({**params, **network}, data.rows, num_boost_round=rounds, valid_sets=valid_sets,
                            valid_names=["validation"] if valid_sets else None, callbacks=[watch, counter, callback])
        watch.stop()
        booster.free_network()
    except Exception as e:
        watch.stop()  # (before the links close: their descriptors may then be reused)
        failure = f"{type(e).__name__}: {e}"
        traceback.clear_frames(e.__traceback__)  # the booster goes now (its network with it)
        lgb.basic._safe_call(lgb.basic._LIB.LGBM_NetworkFree())  # (lgb.train may fail before it has a booster)
        if leads:
            with contextlib.suppress(Exception):  # (the scheduler gone: the others' wait for the word times out)
                orders.send(CALL_OFF)
    finally:
        orders.close()  # (a follower's word stays queued while the follower holds its queue)
    if failure is not None:
        raise ClusterTrainingError(failure)
    out = {"rounds": counter.rounds}
    if leads:
        out |= {"model_text": booster.model_to_string(num_iteration=booster.best_iteration),
                "best_iteration": booster.best_iteration,
                "validation_metric": float(booster.best_score["validation"][params["metric"]])}
    return out


def _failure(client: Client, future, worker: str) -> str:
    """What a failed future of ``worker``'s raised, and whether the worker left the cluster (its tasks are then
    cancelled)."""
    try:
        future.result()
    except BaseException as e:
        failure = f"{type(e).__name__}: {e}"
    else:
        failure = "no error"
    return failure if worker in current_workers(client) else f"its worker left the cluster ({failure})"


def _await_machines(client: Client, futures: list, workers: list[str]) -> None:
    """Until every future (the ``i``-th restricted to ``workers[i]``) is done: :class:`ClusterTrainingError` at the
    first that failed, or as soon as one of ``workers`` has left the cluster (a task restricted to a worker that
    is gone would wait for it for ever; a worker restarted by its nanny comes back at another address). Woken by
    the first future to finish, and at least once a second to ask the scheduler for its workers."""
    from distributed import wait
    from distributed.client import FuturesCancelledError

    while True:
        for machine, future in enumerate(futures):
            if future.status in ("error", "cancelled"):
                raise ClusterTrainingError(f"machine {machine} of {len(workers)} ({workers[machine]}) failed: "
                                           f"{_failure(client, future, workers[machine])}")
        here = current_workers(client)
        if gone := [w for w in workers if w not in here]:
            raise ClusterTrainingError(f"machine {workers.index(gone[0])} of {len(workers)} ({gone[0]}) failed: "
                                       "its worker left the cluster")
        if not (pending := [f for f in futures if not f.done()]):
            return
        with contextlib.suppress(TimeoutError, FuturesCancelledError):  # (a cancelled one is named above)
            wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")


def _forget_later(queues: list[str], call_off: str, delay: float, dask_scheduler=None) -> None:
    """On the scheduler, ``delay`` seconds from now: drop the training's queues (every holder's reference) and its
    call-off event, through the scheduler's own handlers."""
    import asyncio

    def forget() -> None:
        held = dask_scheduler.extensions["queues"]
        for name in queues:
            while name in held.queues:
                held.release(name=name)
        dask_scheduler.extensions["events"].event_clear(name=call_off)  # (deleted: no machine waits on it now)

    asyncio.get_running_loop().call_later(delay, forget)


def placed_workers(client: Client) -> list[str]:
    """The cluster's worker addresses, sorted: part ``i`` of the rows is read on, and trained by, the ``i``-th."""
    return sorted(current_workers(client))


def train_data_parallel(client: Client, workers: list[str], data: list, params: dict, rounds: int,
                        stopping_rounds: int, timeout: float = 600.0) -> dict:
    """Up to ``rounds`` of LightGBM's data-parallel learner across ``workers``, stopped early by the leader: machine
    ``i`` trains on ``data[i]`` (a future of a :class:`_MachineData` held by ``workers[i]``; the first holds the
    validation window) and is ranked ``i``. The leader's result (:func:`_train_machine`; every machine ends with the
    same trees)."""
    import uuid
    from urllib.parse import urlparse

    from distributed import Event

    def on(worker, fn, *args):  # not pure: each call is one machine of one network job
        return client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False)

    leases = [on(w, _PortLease) for w in workers]
    ports = [on(w, _port, lease) for w, lease in zip(workers, leases)]
    _await_machines(client, ports, workers)
    ports = client.gather(ports)
    machines = ",".join(f"{urlparse(w).hostname}:{port}" for w, port in zip(workers, ports))
    job = uuid.uuid4().hex
    queues = [f"batch-platform-rounds-{job}-{i}" for i in range(1, len(workers))]
    call_off = f"batch-platform-call-off-{job}"
    futures = [on(w, _train_machine, d, params, rounds, stopping_rounds, machines, lease,
                  queues if i == 0 else [queues[i - 1]], call_off, timeout)
               for i, (w, d, lease) in enumerate(zip(workers, data, leases))]
    try:
        _await_machines(client, futures, workers)
    except BaseException:  # (the driver interrupted too): no machine is left waiting for a word or on a link
        with contextlib.suppress(Exception):  # (the scheduler gone: the word's wait times out, the links fail)
            orders = _RoundOrders(queues, timeout, client)
            orders.send(CALL_OFF)
            orders.close()  # (the word stays for a machine that holds its queue)
            Event(call_off, client=client).set()
            client.cancel(futures)
            client.run_on_scheduler(_forget_later, queues, call_off, FORGET_AFTER_S)
        raise
    results = [f.result() for f in futures]
    if len({r["rounds"] for r in results}) != 1:
        raise MachinesDisagreeError(f"rounds trained per machine: {[r['rounds'] for r in results]}")
    return results[0]


def machine_data(client: Client, layout: SnapshotLayout, workers: list[str], y_train: np.ndarray, y_val: np.ndarray,
                 params: dict) -> list:
    """Futures of each machine's :class:`_MachineData`, the ``i``-th held by ``workers[i]``: its part of the train
    window read and binned on its worker (every ``n``-th row, :func:`part_matrix`), the first with the validation
    window; the bin sample sent to every worker. Only the binned data stays on the workers once it is built."""
    n, groups = len(workers), WindowRows(layout, "train").row_groups
    sample = client.scatter(bin_sample(layout, params), broadcast=True)
    validation = (client.submit(part_matrix, str(layout.path), WindowRows(layout, "validation").row_groups, 0, 1,
                                layout.features, layout.categorical, layout.categories, layout.nullable_ints,
                                workers=workers[:1], allow_other_workers=False, pure=False),
                  client.scatter(y_val, workers=workers[:1]))  # the leader's: the validation window and labels
    return [client.submit(_MachineData, client.submit(
        part_matrix, str(layout.path), groups, i, n, layout.features, layout.categorical, layout.categories,
        layout.nullable_ints, workers=[w], allow_other_workers=False, pure=False),
        client.scatter(y_train[i::n], workers=[w]), sample, layout.features, layout.categorical, params,
        *(validation if i == 0 else ()), workers=[w], allow_other_workers=False, pure=False)
        for i, w in enumerate(workers)]


TRAINING_LOCK = "batch-platform-training"
"""The cluster-wide lock (a ``distributed.Lock``) a training holds while it is on the cluster. Each training runs a
machine on every worker, and a machine holds its worker's thread until the whole network is done: two trainings at
once could each hold a thread the other's network waits for (measured: four at once on two one-thread workers
never finished; each waited until LightGBM ended a worker's process). The lease of a driver that dies is dropped by
the scheduler (``distributed.scheduler.locks.lease-timeout``, 30 s by default)."""


@contextlib.contextmanager
def _holding_the_cluster(client: Client, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    """:data:`TRAINING_LOCK` for the block; ``on_wait`` hears once if another training holds it."""
    from distributed import Lock

    lock = Lock(TRAINING_LOCK, scheduler_rpc=client.scheduler, loop=client.loop)
    try:
        if not lock.acquire(blocking=False):
            if on_wait is not None:
                on_wait(f"another training holds the Dask cluster (lock {TRAINING_LOCK}): waiting for it to end")
            lock.acquire()
    except Exception as e:  # the scheduler gone
        raise ClusterTrainingError(f"the cluster's training lock ({TRAINING_LOCK}) could not be taken: "
                                   f"{type(e).__name__}: {e}") from e
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # (the scheduler gone: there is no lease left to release)
            lock.release()
        if hasattr(lock, "refresh_callback"):  # (absent when leases never time out)
            lock.refresh_callback.stop()


def train_on_dask(path: Path, spec: ModelSpec, client: Client,
                  config: training.TrainConfig = training.TrainConfig(),
                  on_wait: Callable[[str], None] | None = None) -> training.TrainedModel:
    """:func:`training.train_snapshot` on the cluster ``client`` is connected to (see the module docstring), one
    training at a time (:data:`TRAINING_LOCK`; ``on_wait`` hears when this one waits for another)."""
    layout = read_layout(path, spec)
    y_train, y_val = (layout.labels[layout.positions(w)] for w in ("train", "validation"))
    training._check_windows(spec, y_train[~pd.isna(y_train)], y_val[~pd.isna(y_val)])
    with _holding_the_cluster(client, on_wait):
        return _search(layout, spec, client, config, y_train, y_val)


def _search(layout: SnapshotLayout, spec: ModelSpec, client: Client, config: training.TrainConfig,
            y_train: np.ndarray, y_val: np.ndarray) -> training.TrainedModel:
    """The search of :func:`train_on_dask`, the cluster held."""
    import lightgbm as lgb

    base = training._base_params(spec, config)
    workers = placed_workers(client)[:len(y_train)]  # no machine without rows (LightGBM cannot bin an empty part)
    higher_better = spec.gate.metric in ("roc_auc", "average_precision")
    best: training.TrainedModel | None = None
    trials, data = [], []
    try:
        data = machine_data(client, layout, workers, y_train, y_val, base)
        for point in training.candidate_params(config):
            params = {**base, **point}
            lead = train_data_parallel(client, workers, data, params, config.max_rounds, config.early_stopping_rounds)
            iteration, score = lead["best_iteration"], lead["validation_metric"]
            trials.append({"params": point, "best_iteration": iteration, "validation_metric": score,
                           "rounds": lead["rounds"]})
            if best is None or (score > best.validation_metric if higher_better else score < best.validation_metric):
                booster = lgb.Booster(model_str=lead["model_text"])
                # the categories travel with the model, as from a DataFrame (LightGBM's pandas_categorical)
                booster.pandas_categorical = [layout.categories[c] for c in layout.categorical]
                best = training.TrainedModel(
                    model_text=booster.model_to_string(), params=params, best_iteration=iteration,
                    features=layout.features, categorical=layout.categorical, validation_metric=score,
                )
    except ClusterTrainingError:
        raise
    except Exception as e:  # a worker lost while its rows were binned, the scheduler gone, ...
        raise ClusterTrainingError(f"{spec.name}: training on the Dask cluster failed: {type(e).__name__}: {e}") from e
    finally:
        client.cancel(data)
    assert best is not None
    best.trials = trials
    return best
