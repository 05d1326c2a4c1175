"""Resources, registered once. Paths come from the environment (see ``batch_platform.settings``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.features.dbt_cli import dbt_cli_resource
from batch_platform.lib import feature_generations, warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file shared by the raw loaders and dbt. Connections are serialized across
    processes by a file lock (see ``batch_platform.lib.warehouse``)."""

    path: str = Field(description="Path of the DuckDB database file (env BATCH_PLATFORM_WAREHOUSE).")
    lock_timeout_s: float = Field(default=600.0, description="Longest wait for another process's warehouse lock.")
    dbt_memory_limit: str = Field(
        default=settings.DBT_MEMORY_LIMIT,
        description="DuckDB's memory cap in the feature build's dbt process, e.g. 1GB (env "
        "BATCH_PLATFORM_DBT_MEMORY_LIMIT); beyond it DuckDB spills to <warehouse>.tmp. A build that needs more than "
        "it can spill fails with DuckDB's Out of Memory Error and publishes nothing.",
    )

    @property
    def db_path(self) -> Path:
        return Path(self.path)

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection under the warehouse lock. Every step that reads the warehouse first completes a feature
        publication a crash interrupted between the warehouse and the files (the warehouse's record wins), so
        no step reads tables of one feature generation with files of another."""
        with warehouse.connect(self.db_path, read_only=read_only, timeout_s=self.lock_timeout_s) as con:
            feature_generations.reconcile(con, settings.features_dir(), settings.feature_generations_dir())
            yield con


class FeatureStoreResource(dg.ConfigurableResource):
    """The Feast feature repository (offline: parquet over DuckDB; online: SQLite by default).

    Redis replaces the SQLite online store when ``BATCH_PLATFORM_REDIS`` (a connection string that may hold a
    password) is set in the process that runs the step: the client reads it when it opens Feast
    (``batch_platform.lib.feature_store.repo_config``), so it is not a field shown in the UI."""

    repo_dir: str = Field(description="Folder with feature_store.yaml and the Feast object modules.")
    registry_path: str = Field(description="Feast registry file (env BATCH_PLATFORM_FEAST_REGISTRY).")
    online_store_path: str = Field(description="SQLite online store file (env BATCH_PLATFORM_ONLINE_STORE); "
                                   "unused when BATCH_PLATFORM_REDIS is set.")

    def client(self):
        from batch_platform.lib.feature_store import FeatureStoreClient

        # feature_store.yaml reads these two paths from the environment: keep it in step with this resource.
        os.environ[settings.FEAST_REGISTRY_VAR] = self.registry_path
        os.environ[settings.ONLINE_STORE_VAR] = self.online_store_path
        return FeatureStoreClient(Path(self.repo_dir))


class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry: versions, aliases and the append-only alias log (SQLite, WAL, its own file)."""

    path: str = Field(description="Registry database file (env BATCH_PLATFORM_REGISTRY).")
    artifacts_dir: str = Field(description="Where model artefacts, plots and reports are written "
                               "(env BATCH_PLATFORM_ARTIFACTS_DIR).")

    def registry(self):
        from batch_platform.lib.registry import ModelRegistry

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return ModelRegistry(Path(self.path))


class DaskClusterUnreachable(RuntimeError):
    """The Dask scheduler ``BATCH_PLATFORM_DASK_ADDRESS`` names did not answer: the step fails before it starts."""


class DaskResource(dg.ConfigurableResource):
    """The Dask cluster training and batch scoring run on, when a scheduler address is set: candidates are trained
    by LightGBM's data-parallel learner across the workers from the training-set snapshot (``lib/dask_training.py``)
    and each day's rows are scored on the workers (``lib/dask_scoring.py``), committed by the step as on the local
    path. Unset, both run in the step's own process. The cluster's workers need this package and read the snapshot
    at the same path."""

    address: str = Field(default="", description="Dask scheduler address, e.g. tcp://scheduler:8786 (env "
                         "BATCH_PLATFORM_DASK_ADDRESS); empty: train and score in the step's process.")
    connect_timeout_s: float = Field(default=30.0, description="Longest wait for the scheduler.")

    @property
    def runs_on(self) -> str:
        """Where training and scoring run, as the assets record it: the scheduler's address, or ``local``."""
        return self.address.strip() or "local"

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A ``distributed.Client`` of the cluster for the duration of the block; ``None`` when no address is set."""
        address = self.address.strip()
        if not address:
            yield None
            return
        from distributed import Client

        try:
            # the default client while the block runs: dask's futures and collections look it up
            client = Client(address, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError) as e:
            raise DaskClusterUnreachable(f"Dask scheduler at {address} (from BATCH_PLATFORM_DASK_ADDRESS) is "
                                         f"unreachable: {type(e).__name__}: {e}") from e
        with client:
            yield client


class LandingZoneResource(dg.ConfigurableResource):
    """Where upstream batches land (one file per table per day) and where rejected ones are quarantined."""

    landing_dir: str = Field(description="Landing folder (env BATCH_PLATFORM_LANDING_DIR).")
    quarantine_dir: str = Field(description="Quarantine folder for rejected batches (env BATCH_PLATFORM_QUARANTINE_DIR).")
    archive_dir: str = Field(description="Every loaded version of every batch, by sha256 (env "
                             "BATCH_PLATFORM_ARCHIVE_DIR): a correction never erases what was loaded before.")
    require_manifest: bool = Field(
        default=True,
        description="Reject a batch without its export manifest (row count + sha256) beside it.",
    )


def build_resources() -> dict[str, dg.ConfigurableResource]:
    settings.export_defaults()
    return {
        "warehouse": WarehouseResource(path=dg.EnvVar(settings.WAREHOUSE_VAR),
                                       dbt_memory_limit=dg.EnvVar(settings.DBT_MEMORY_LIMIT_VAR)),
        "landing": LandingZoneResource(
            landing_dir=dg.EnvVar(settings.LANDING_VAR),
            quarantine_dir=dg.EnvVar(settings.QUARANTINE_VAR),
            archive_dir=dg.EnvVar(settings.ARCHIVE_VAR),
        ),
        "feature_store": FeatureStoreResource(
            repo_dir=str(settings.FEATURE_REPO_DIR),
            registry_path=dg.EnvVar(settings.FEAST_REGISTRY_VAR),
            online_store_path=dg.EnvVar(settings.ONLINE_STORE_VAR),
        ),
        "model_registry": ModelRegistryResource(
            path=dg.EnvVar(settings.REGISTRY_VAR), artifacts_dir=dg.EnvVar(settings.ARTIFACTS_VAR)
        ),
        "dbt": dbt_cli_resource(),
        "dask": DaskResource(address=dg.EnvVar(settings.DASK_ADDRESS_VAR)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
