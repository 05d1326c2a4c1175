"""dbt's parse state is carried from one invocation to the next, per warehouse (lib/dbt_runs.py)."""

import os
import subprocess
from pathlib import Path

from batch_platform import settings
from batch_platform.defs.features.project import dbt_executable
from batch_platform.lib import dbt_runs


def test_an_invocation_starts_from_the_state_kept_for_its_own_warehouse(tmp_path):
    root = tmp_path / "runs"
    first = dbt_runs.new_invocation(root, "run1", tmp_path / "a.duckdb")
    assert not (first / dbt_runs.PARSE_STATE).exists()  # nothing kept yet: dbt parses in full
    (first / dbt_runs.PARSE_STATE).write_bytes(b"parsed against a")
    dbt_runs.keep_parse_state(root, first, tmp_path / "a.duckdb")

    again = dbt_runs.new_invocation(root, "run2", tmp_path / "a.duckdb")
    assert (again / dbt_runs.PARSE_STATE).read_bytes() == b"parsed against a"
    other = dbt_runs.new_invocation(root, "run3", tmp_path / "b.duckdb")
    assert not (other / dbt_runs.PARSE_STATE).exists()  # another profile: a state of a's would be rejected anyway


def test_only_the_newest_invocation_folders_are_kept(tmp_path):
    root = tmp_path / "runs"
    folders = []
    for i in range(5):
        folders.append(dbt_runs.new_invocation(root, f"run{i}", tmp_path / "w.duckdb"))
        os.utime(folders[-1], (1_000_000 + i, 1_000_000 + i))
    dbt_runs.keep_parse_state(root, folders[-1], tmp_path / "w.duckdb", keep=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(f.name for f in folders[-2:])


def test_the_next_dbt_invocation_parses_partially(platform, tmp_path):
    """The session's feature build kept its parse state in the data dir; dbt started from it does not re-parse."""
    root = Path(platform["data"]) / "dbt_runs"  # settings.dbt_runs_dir() of the session platform
    warehouse = Path(platform["env"][settings.WAREHOUSE_VAR])
    import duckdb

    from batch_platform.lib import feature_generations

    with duckdb.connect(str(warehouse), read_only=True) as con:
        generation = feature_generations.published(con).generation  # the build's: its parse state was kept
    target = dbt_runs.new_invocation(root, "test", warehouse, generation)
    assert (target / dbt_runs.PARSE_STATE).exists()
    env = {**os.environ, "DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(target),
           settings.WAREHOUSE_VAR: str(warehouse), settings.DBT_GENERATION_VAR: generation}
    out = subprocess.run([dbt_executable(), "parse", "--profiles-dir", str(settings.DBT_PROJECT_DIR)],
                         cwd=settings.DBT_PROJECT_DIR, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    log = (target / "dbt.log").read_text()
    assert "Unable to do partial parsing" not in log, [ln for ln in log.splitlines() if "partial" in ln.lower()]


def test_the_dbt_resource_knows_its_version_without_starting_dbt(monkeypatch):
    """FeatureDbtCliResource reads the version of the dbt beside this interpreter from the package metadata:
    the version `dbt --version` prints, without starting dbt (dagster-dbt starts it at every invocation)."""
    import re

    import dagster_dbt.core.resource as dbt_resource

    from batch_platform.defs.features.dbt_cli import dbt_cli_resource

    printed = subprocess.run([dbt_executable(), "--version"], capture_output=True, text=True, check=True).stdout
    started = []
    monkeypatch.setattr(dbt_resource, "check_output", lambda *a, **k: started.append(a) or b"")
    resource = dbt_cli_resource()
    assert str(resource._cli_version) == re.search(r"installed:\s*(\d+\.\d+\.\d+)", printed).group(1)
    assert resource._initialize_dbt_core_adapter(["build"]) is None  # no adapter: no metadata fetches to serve
    assert not started


def test_the_platform_build_leaves_dbt_unit_tests_to_the_suite(platform):
    """The session's feature build ran the data tests (they are asset checks) and no unit test (of the SQL:
    tests/test_features_e2e.py runs them on every `make test`)."""
    import json

    results = [r for path in (Path(platform["data"]) / "dbt_runs").glob("*/run_results.json")
               for r in json.loads(path.read_text())["results"]]
    kinds = {r["unique_id"].split(".")[0] for r in results}
    assert "test" in kinds and "model" in kinds and "unit_test" not in kinds
