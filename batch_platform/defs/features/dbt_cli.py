"""The dbt CLI resource of the feature build: dagster-dbt's :class:`DbtCliResource` without two costs it pays on
every invocation that this platform does not need (pinned to dagster-dbt 0.29.27, whose ``DbtCliResource.cli``
this reads):

- ``_cli_version`` runs ``dbt --version`` in a subprocess (a Python start that imports dbt: 2.8 s here) to learn
  which dbt it is about to start. The executable is the dbt-core installed beside this interpreter
  (:func:`dbt_executable`), whose version is in the package metadata.
- ``_initialize_dbt_core_adapter`` opens a dbt adapter in the step process (loading every macro: 1.5 s) for
  ``fetch_row_counts()`` and ``fetch_column_metadata()``, which the feature build does not call.

Together they were a fifth of a morning's feature build. A dbt found elsewhere (on ``PATH``) keeps dagster-dbt's
own behaviour.
"""

from __future__ import annotations

import importlib.metadata
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliResource
from packaging import version

from batch_platform.defs.features.project import dbt_executable, dbt_project


class FeatureDbtCliResource(DbtCliResource):
    """``DbtCliResource`` for the dbt-core installed beside this interpreter (see the module docstring)."""

    @property
    def _installed_here(self) -> bool:
        return Path(self.dbt_executable).parent == Path(sys.executable).parent

    @cached_property
    def _cli_version(self) -> version.Version:
        if self._installed_here:
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Any) -> Any:
        if self._installed_here:
            return None  # DbtCliInvocation takes no adapter as "no metadata fetches"
        return super()._initialize_dbt_core_adapter(args)


def dbt_cli_resource() -> FeatureDbtCliResource:
    return FeatureDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
