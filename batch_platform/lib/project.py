"""Project folders: where the files a user writes live, for flights or for a domain of their own.

A project is five parts: the source contracts, the model specs, the time model, the dbt project and the Feast
declarations. The shipped flights project has them where the repository keeps them (``batch_platform/sources``,
``batch_platform/models``, ``batch_platform/time_model.yaml``, ``dbt_project/``, ``feature_repo/``). Another
project is one folder with the same parts under conventional names (:data:`LAYOUT`), named by
``BATCH_PLATFORM_PROJECT``; a part's own variable (``BATCH_PLATFORM_SOURCES``, ...) still wins over the folder, so
one part can be moved on its own. The shipped example ``batch_platform/examples/chicago_ridership`` is such a folder.

Read when a module that needs the path is imported (the definitions are built from them), so a process's
environment decides its project: set the variables before starting ``dagster dev``, the daemon or the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_VAR = "BATCH_PLATFORM_PROJECT"
SOURCES_VAR = "BATCH_PLATFORM_SOURCES"
SPECS_VAR = "BATCH_PLATFORM_MODEL_SPECS"
TIME_MODEL_VAR = "BATCH_PLATFORM_TIME_MODEL"
DBT_PROJECT_VAR = "BATCH_PLATFORM_DBT_PROJECT"
FEATURE_REPO_VAR = "BATCH_PLATFORM_FEATURE_REPO"

LAYOUT = {
    SOURCES_VAR: "sources",
    SPECS_VAR: "models",
    TIME_MODEL_VAR: "time_model.yaml",
    DBT_PROJECT_VAR: "dbt",
    FEATURE_REPO_VAR: "feature_repo",
}
"""Each part's place in a project folder."""


class ProjectError(ValueError):
    """``BATCH_PLATFORM_PROJECT`` names no folder, or the folder lacks a part it must have."""


def project_dir() -> Path | None:
    """The folder ``BATCH_PLATFORM_PROJECT`` names (None: the shipped flights project)."""
    value = os.environ.get(PROJECT_VAR, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        raise ProjectError(f"{PROJECT_VAR}={value}: not a folder")
    return folder


def part(var: str, default: Path) -> Path:
    """Where the part ``var`` (one of :data:`LAYOUT`'s keys) is: its own variable, else its place in the project
    folder, else ``default`` (the flights project's)."""
    if var not in LAYOUT:
        raise KeyError(f"{var} is not a project part ({', '.join(LAYOUT)})")
    own = os.environ.get(var, "").strip()
    if own:
        return Path(own).expanduser()
    folder = project_dir()
    if folder is None:
        return default
    path = folder / LAYOUT[var]
    if not path.exists():
        raise ProjectError(f"{PROJECT_VAR}={folder}: it has no {LAYOUT[var]} ({var} names none either)")
    return path


FLIGHTS_SPECS_DIR = Path(__file__).resolve().parent.parent / "models"  # the shipped project's model specs


def specs_dir() -> Path:
    """The folder of the model specs (``*.yaml``) in force."""
    return part(SPECS_VAR, FLIGHTS_SPECS_DIR)


__all__ = ["FLIGHTS_SPECS_DIR", "LAYOUT", "PROJECT_VAR", "ProjectError", "part", "project_dir", "specs_dir"]
