"""Source contracts as configuration (batch_platform/sources/*.yaml, read by lib/contracts.py): the shipped flights
contracts are the ones the platform declared in Python before (same schema versions: every field and rule the
same), and a malformed file fails at load with a named error pointing at the file and the field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from batch_platform.lib import contracts
from batch_platform.lib.contracts import (
    BadContractValue,
    BadName,
    BadPredicate,
    MissingContractField,
    UndeclaredColumn,
    UnknownColumnType,
    UnknownContractField,
    load_contracts,
)

# The schema versions (table.v<version>+<sha256 of the whole declaration>) of the contracts as lib/contracts.py
# declared them in Python until they moved to YAML: equal, so every raw table, check and feature built on them is
# what it was.
PYTHON_DECLARED = ["flights.v1+d5b51827fcff", "weather.v1+991fe8f5e3f8", "flight_schedule.v1+f478729f28b3",
                   "planes.v1+a32ba4cd535c", "airports.v1+205c769be3f6", "airlines.v1+a0244100ee2b"]


def test_the_shipped_contracts_are_the_python_ones_they_replace():
    assert sorted(c.schema_version for c in contracts.ALL_CONTRACTS) == sorted(PYTHON_DECLARED)
    assert contracts.DERIVED_TABLES == {"flight_schedule": "flights"}
    assert not list(contracts.SOURCES_DIR.glob("*.py"))
    # the schedule is derived: its rules are the flights rules over its columns, then its own
    schedule = contracts.FLIGHT_SCHEDULE
    assert schedule.key == contracts.FLIGHTS.key and schedule.partitioning == contracts.FLIGHTS.partitioning
    assert [r.name for r in schedule.row_rules] == ["origin_differs_from_dest", "clock_times_are_hhmm"]


def test_a_rule_runs_as_parsed_never_as_written():
    rule = contracts.RowRule("r", "dep_time > 0 -- AND a comment that would swallow what follows it", "d")
    assert rule.sql == "dep_time > 0"
    for c in contracts.ALL_CONTRACTS:  # every shipped rule renders to one expression DuckDB binds as boolean
        for r in c.row_rules:
            contracts.check_predicate(r.sql, c.columns)


def _good() -> dict:
    return {
        "table": "readings", "source": "raw", "version": "1", "kind": "daily",
        "description": "Meter readings.",
        "columns": [
            {"name": "meter", "type": "VARCHAR", "nullable": False, "description": "Meter id."},
            {"name": "year", "type": "BIGINT", "nullable": False, "min": 2000, "max": 2100, "description": "y"},
            {"name": "month", "type": "BIGINT", "nullable": False, "min": 1, "max": 12, "description": "m"},
            {"name": "day", "type": "BIGINT", "nullable": False, "min": 1, "max": 31, "description": "d"},
            {"name": "read_at", "type": "TIMESTAMPTZ", "nullable": False, "description": "When."},
            {"name": "kwh", "type": "DOUBLE", "min": 0, "max": 1e6, "description": "Energy."},
        ],
        "key": ["meter", "read_at"],
        "partitioning": {"date_columns": ["year", "month", "day"], "instant_column": "read_at",
                         "timezone": "Europe/Paris"},
        "row_rules": [{"name": "kwh_not_absurd", "predicate": "kwh < 1000 OR meter LIKE 'bulk%'",
                       "description": "Household meters read under 1 MWh."}],
        "published": {"day_offset": 1, "local_time": "04:30"},
        "format": "parquet",
    }


def _load(tmp_path: Path, *docs: dict) -> dict:
    for doc in docs:
        (tmp_path / f"{doc['table']}.yaml").write_text(yaml.safe_dump(doc))
    return load_contracts(tmp_path)


def test_a_well_formed_contract_loads(tmp_path):
    derived = {"table": "meters_seen", "version": "1", "kind": "derived", "description": "Which meter read when.",
               "derived_from": "readings", "columns": ["meter", "year", "month", "day", "read_at"],
               "published": {"day_offset": -1, "local_time": "18:00"}}
    got = _load(tmp_path, _good(), derived)
    assert got["readings"].row_rules[0].sql == "kwh < 1000 OR meter LIKE 'bulk%'"
    assert got["meters_seen"].key == ("meter", "read_at") and got["meters_seen"].row_rules == ()  # kwh dropped
    # when and how batches arrive: the derived table has its own publication time, and CSV by default
    assert got["readings"].published == contracts.Publication(1, "04:30") and got["readings"].final is None
    assert got["readings"].file_format == "parquet" and got["readings"].extension == ".parquet"
    assert got["meters_seen"].published == contracts.Publication(-1, "18:00")
    assert got["meters_seen"].file_format == "csv"


def test_publication_and_format_are_not_the_schema(tmp_path):
    """Moving a publication time or changing the file format leaves the schema version (and so every raw asset's
    code version) as it was; the shipped publication times are the time model's feed rules."""
    first = _load(tmp_path, _good())["readings"]
    moved = _good() | {"published": {"day_offset": 2, "local_time": "07:00"}, "format": "csv",
                       "final": {"day_offset": 3, "local_time": "07:00"}}
    second = _load(tmp_path, moved)["readings"]
    assert second.published != first.published and second.schema_version == first.schema_version
    from batch_platform.lib.time_model import load_time_model

    tm = load_time_model()
    for c in contracts.ALL_CONTRACTS:
        rule = tm.feed(c.table)
        assert (rule.published.day_offset, rule.published.local_time) == (c.published.day_offset,
                                                                          c.published.local_time)
        assert rule.snapshot == c.is_snapshot
    assert tm.final_at("flights", dt.date(2013, 7, 1)).isoformat() == "2013-07-03T10:00:00+00:00"


def _broken(tmp_path, change) -> contracts.ContractError:
    doc = _good()
    change(doc)
    with pytest.raises(contracts.ContractError) as raised:
        _load(tmp_path, doc)
    assert raised.value.path == str(tmp_path / "readings.yaml")
    return raised.value


def _set(path: str, value):
    def change(doc):
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return change


@pytest.mark.parametrize("path, value, error, field", [
    ("columns.5.type", "DECIMAL(9,2)", UnknownColumnType, "columns[5].type"),
    ("columns.5.nulable", False, UnknownContractField, "columns[5].nulable"),
    ("key", ["meter", "reading_time"], UndeclaredColumn, "key"),
    ("partitioning.instant_column", "read_time", UndeclaredColumn, "partitioning"),
    ("partitioning.timezone", "Mars/Olympus", BadContractValue, "partitioning.timezone"),
    ("columns.5.min", "zero", BadContractValue, "columns[5].min"),
    ("columns.5.on_out_of_range", None, BadContractValue, "columns[5].on_out_of_range"),  # a bare `null`
    ("description", None, MissingContractField, "description"),
    ("published", None, MissingContractField, "published"),
    ("published.local_time", "6am", BadContractValue, "published.local_time"),
    ("published.day_offset", 1.5, BadContractValue, "published.day_offset"),
    ("published.hour", 6, UnknownContractField, "published.hour"),
    ("format", "xlsx", BadContractValue, "format"),
    # partitioning: the year/month/day columns or one DATE column, and/or an instant (TIMESTAMPTZ)
    ("partitioning.date_columns", ["year", "month"], BadContractValue, "partitioning.date_columns"),
    ("partitioning.date_columns", ["meter"], BadContractValue, "partitioning.date_columns"),
    ("partitioning.date_columns", ["meter", "kwh", "year"], BadContractValue, "partitioning.date_columns"),
    ("partitioning.instant_column", "kwh", BadContractValue, "partitioning.instant_column"),
    # names are plain identifiers: nothing to quote, nothing to escape
    ("columns.0.name", "meter; DROP TABLE raw.flights", BadName, "columns[0].name"),
    ("columns.0.name", 'meter" VARCHAR, x', BadName, "columns[0].name"),
    ("row_rules.0.name", "a b", BadName, "row_rules[0].name"),
    # rules: one boolean expression over the table's own columns, bound by DuckDB
    ("row_rules.0.predicate", "kwh <", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "kwh > 0; DROP TABLE raw.flights", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "kwh > (SELECT max(kwh) FROM raw.readings)", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "kwh IN (SELECT 1)", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "raw.readings.kwh > 0", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "watts > 0", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "kwh + 1", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "no_such_function(kwh) > 0", BadPredicate, "row_rules[0].predicate"),
    ("row_rules.0.predicate", "meter > 3", BadPredicate, "row_rules[0].predicate"),  # VARCHAR vs number: no bind
])
def test_a_malformed_contract_fails_at_load_naming_file_and_field(tmp_path, path, value, error, field):
    got = _broken(tmp_path, _set(path, value))
    assert type(got) is error and got.field == field, got
    assert "readings.yaml" in str(got) and field in str(got)


def test_a_derived_table_keeps_its_base_columns_only(tmp_path):
    derived = {"table": "meters_seen", "version": "1", "kind": "derived", "description": "d",
               "derived_from": "readings", "columns": ["meter", "year", "month", "day", "read_at", "volts"],
               "published": {"day_offset": -1, "local_time": "18:00"}}
    with pytest.raises(UndeclaredColumn, match="meters_seen.yaml, field columns"):
        _load(tmp_path, _good(), derived)
    derived["columns"] = ["meter", "year", "month", "day"]  # the key's read_at dropped
    (tmp_path / "meters_seen.yaml").write_text(yaml.safe_dump(derived))
    with pytest.raises(UndeclaredColumn, match="must be kept"):
        load_contracts(tmp_path)
    derived |= {"columns": ["meter", "year", "month", "day", "read_at"], "derived_from": "nowhere"}
    (tmp_path / "meters_seen.yaml").write_text(yaml.safe_dump(derived))
    with pytest.raises(UndeclaredColumn, match="derived_from"):
        load_contracts(tmp_path)


def test_the_file_is_named_for_its_table(tmp_path):
    (tmp_path / "meter_readings.yaml").write_text(yaml.safe_dump(_good()))
    with pytest.raises(BadContractValue, match="name the file readings.yaml"):
        load_contracts(tmp_path)


def test_a_day_is_a_date_column_or_an_instant_alone(tmp_path):
    by_date = _good()
    by_date["columns"] = [c for c in by_date["columns"] if c["name"] not in ("year", "month", "day")] + [
        {"name": "read_on", "type": "DATE", "nullable": False, "description": "Local date read."}]
    by_date["partitioning"] = {"date_columns": ["read_on"], "timezone": "Europe/Paris"}
    got = _load(tmp_path, by_date)["readings"].partitioning
    assert got.columns == ("read_on",) and got.outside_sql("2013-01-15", str) == "read_on <> DATE '2013-01-15'"
    by_instant = _good() | {"partitioning": {"instant_column": "read_at", "timezone": "Europe/Paris"}}
    got = _load(tmp_path, by_instant)["readings"].partitioning
    assert got.columns == ("read_at",)
    assert got.outside_sql("2013-01-15", str) == \
        "CAST(timezone('Europe/Paris', read_at) AS DATE) <> DATE '2013-01-15'"
    neither = _good() | {"partitioning": {"timezone": "Europe/Paris"}}
    with pytest.raises(MissingContractField, match="field partitioning: declares neither"):
        _load(tmp_path, neither)
