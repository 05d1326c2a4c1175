"""Resources, registered once. Paths come from the environment (see ``batch_platform.settings``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from batch_platform import settings
from batch_platform.lib import warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file shared by the raw loaders and dbt. Connections are serialized across
    processes by a file lock (see ``batch_platform.lib.warehouse``)."""

    path: str = Field(description="Path of the DuckDB database file (env BATCH_PLATFORM_WAREHOUSE).")
    lock_timeout_s: float = Field(default=600.0, description="Longest wait for another process's warehouse lock.")

    @property
    def db_path(self) -> Path:
        return Path(self.path)

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.db_path, read_only=read_only, timeout_s=self.lock_timeout_s) as con:
            yield con


class LandingZoneResource(dg.ConfigurableResource):
    """Where upstream batches land (one file per table per day) and where rejected ones are quarantined."""

    landing_dir: str = Field(description="Landing folder (env BATCH_PLATFORM_LANDING_DIR).")
    quarantine_dir: str = Field(description="Quarantine folder for rejected batches (env BATCH_PLATFORM_QUARANTINE_DIR).")
    require_manifest: bool = Field(
        default=True,
        description="Reject a batch without its export manifest (row count + sha256) beside it.",
    )


def build_resources() -> dict[str, dg.ConfigurableResource]:
    settings.export_defaults()
    return {
        "warehouse": WarehouseResource(path=dg.EnvVar(settings.WAREHOUSE_VAR)),
        "landing": LandingZoneResource(
            landing_dir=dg.EnvVar(settings.LANDING_VAR),
            quarantine_dir=dg.EnvVar(settings.QUARANTINE_VAR),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
