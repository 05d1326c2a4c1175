"""The dbt project, parsed once: the manifest is (re)built when missing or older than the project files."""

import fcntl
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from batch_platform import settings

dbt_project = DbtProject(project_dir=settings.DBT_PROJECT_DIR, profiles_dir=settings.DBT_PROJECT_DIR)


def dbt_executable() -> str:
    """dbt from this interpreter's environment (the venv need not be activated), else from PATH, started through
    ``batch-platform-dbt`` where installed: a dbt that dies with the step that started it."""
    for name in ("batch-platform-dbt", "dbt"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    return "dbt"


def _newest_source_mtime(project_dir: Path) -> float:
    files = [project_dir / "dbt_project.yml", project_dir / "profiles.yml"]
    for folder in ("models", "macros", "seeds", "tests"):
        files += [p for p in (project_dir / folder).rglob("*") if p.is_file()]
    files += [p for p in settings.DBT_MACROS_DIR.rglob("*") if p.is_file()]  # the platform's, on every project's path
    return max((p.stat().st_mtime for p in files if p.exists()), default=0.0)


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """`dbt parse` when the manifest is missing or stale (`dagster dev` also re-parses on start). Processes that
    load the definitions at once (the webserver's and daemon's code servers, run workers) take turns: one parses,
    the others wait and then find the manifest fresh, never half written."""
    manifest = project.manifest_path
    lock = Path(project.project_dir) / project.target_path / ".parse.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # released when the file closes
        return _parse_if_stale(project, manifest)


def _parse_if_stale(project: DbtProject, manifest: Path) -> Path:
    if not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime(Path(project.project_dir)):
        out = subprocess.run(
            [dbt_executable(), "parse", "--quiet", "--profiles-dir", str(project.profiles_dir),
             "--target-path", str(project.target_path)],
            cwd=project.project_dir, capture_output=True, text=True,
        )
        if out.returncode != 0 or not manifest.exists():
            raise RuntimeError(f"dbt parse failed in {project.project_dir}:\n{out.stdout[-4000:]}{out.stderr[-2000:]}")
    return manifest
