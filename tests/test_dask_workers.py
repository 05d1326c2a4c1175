"""The workers of a Dask cluster as the trainings and the scoring see them (``lib/dask_workers.py``), on a real
LocalCluster."""

import pytest

from batch_platform.lib.dask_workers import current_workers


@pytest.mark.timeout(180)
def test_the_workers_are_never_missing_while_the_client_refreshes_its_cached_identity():
    """The client refreshing its cached identity (which lists no workers) every 5 ms: 2,000 askings all name both
    workers. Read from ``Client.scheduler_info()`` the cluster looked empty in 78 of 2,000 here, and a training
    took its workers for gone and called itself off."""
    import dask
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            dask.config.set({"distributed.client.scheduler-info-interval": "5ms"}), Client(cluster) as client:
        expected = set(cluster.scheduler.workers)
        seen = [set(current_workers(client)) for _ in range(2000)]
    assert len(expected) == 2 and all(s == expected for s in seen)
