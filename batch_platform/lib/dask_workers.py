"""The workers of a Dask cluster, as its scheduler has them at the moment of asking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client


def current_workers(client: Client) -> dict[str, Any]:
    """The scheduler's workers (address -> its information), asked of the scheduler for this call.

    Not ``Client.scheduler_info()["workers"]``: that returns the client's one cached identity, which the client's
    own refresh (every ``distributed.client.scheduler-info-interval``) overwrites with an identity listing no
    workers, so read at the wrong moment the cluster looks empty (measured: 78 calls of 2,000 at a 5 ms interval).
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]
