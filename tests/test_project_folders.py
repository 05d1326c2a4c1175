"""Project folders (lib/project.py): one variable, BATCH_PLATFORM_PROJECT, moves every part a user writes --
sources, model specs, time model, dbt project, Feast declarations -- to a folder of their own; a part's own
variable still wins; a folder that lacks a part is a named error. Checked in fresh processes, as a user starts
one (the definitions read these paths when they load)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batch_platform.lib import project

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"sources": "batch_platform.lib.contracts.sources_dir()",
         "models": "batch_platform.lib.specs.specs_dir()",
         "time_model": "batch_platform.lib.time_model.time_model_path()",
         "dbt": "batch_platform.settings.DBT_PROJECT_DIR",
         "feature_repo": "batch_platform.settings.FEATURE_REPO_DIR"}


def where(env: dict[str, str]) -> dict[str, str]:
    """Each part's path in a fresh interpreter started with ``env`` (on top of this one's, project vars cleared)."""
    code = ("import json, batch_platform.settings, batch_platform.lib.contracts, batch_platform.lib.specs, "
            "batch_platform.lib.time_model\n"
            f"print(json.dumps({{k: str(v) for k, v in {{{', '.join(f'{k!r}: {v}' for k, v in PARTS.items())}}}.items()}}))")
    base = {k: v for k, v in os.environ.items() if k not in project.LAYOUT and k != project.PROJECT_VAR}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout)


def make_project(folder: Path, skip: str = "") -> Path:
    for name in project.LAYOUT.values():
        if name != skip:
            (folder / name).mkdir(parents=True) if "." not in name else (folder / name).write_text("timezone: UTC\n")
    if skip != "sources":  # one contract: a folder of sources holds at least one
        (folder / "sources" / "airlines.yaml").write_text((ROOT / "batch_platform/sources/airlines.yaml").read_text())
    return folder


def test_the_flights_project_is_where_the_repository_keeps_it():
    paths = where({})
    assert paths == {"sources": str(ROOT / "batch_platform" / "sources"),
                     "models": str(ROOT / "batch_platform" / "models"),
                     "time_model": str(ROOT / "batch_platform" / "time_model.yaml"),
                     "dbt": str(ROOT / "dbt_project"), "feature_repo": str(ROOT / "feature_repo")}


def test_one_variable_moves_every_part_and_a_part_of_its_own_wins(tmp_path):
    folder = make_project(tmp_path / "mine")
    paths = where({project.PROJECT_VAR: str(folder)})
    assert paths == {"sources": str(folder / "sources"), "models": str(folder / "models"),
                     "time_model": str(folder / "time_model.yaml"), "dbt": str(folder / "dbt"),
                     "feature_repo": str(folder / "feature_repo")}
    elsewhere = tmp_path / "specs_elsewhere"
    elsewhere.mkdir()
    moved = where({project.PROJECT_VAR: str(folder), project.SPECS_VAR: str(elsewhere)})
    assert moved["models"] == str(elsewhere) and moved["sources"] == str(folder / "sources")


def test_a_folder_without_a_part_or_no_folder_at_all_is_a_named_error(tmp_path):
    folder = make_project(tmp_path / "no_dbt", skip="dbt")
    with pytest.raises(RuntimeError, match=r"ProjectError: BATCH_PLATFORM_PROJECT=.*no_dbt: it has no dbt"):
        where({project.PROJECT_VAR: str(folder)})
    with pytest.raises(RuntimeError, match="ProjectError: BATCH_PLATFORM_PROJECT=.*nowhere: not a folder"):
        where({project.PROJECT_VAR: str(tmp_path / "nowhere")})


def test_the_shipped_example_is_a_project_folder():
    folder = ROOT / "batch_platform" / "examples" / "chicago_ridership"
    assert all((folder / name).exists() for name in project.LAYOUT.values())
    paths = where({project.PROJECT_VAR: str(folder)})
    assert paths["dbt"] == str(folder / "dbt") and paths["models"] == str(folder / "models")
