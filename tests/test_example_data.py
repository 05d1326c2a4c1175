"""The shipped example's data (batch_platform/examples/chicago_ridership, lib/examples.py): read from the
registry package that carries it, turned into its raw tables by the SQL in example.yaml, held to its contracts,
and landed as the daily batches its upstream would publish -- each one a valid batch of its day."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from zoneinfo import ZoneInfo

import pyarrow.compute as pc
import pytest
import yaml

from batch_platform.lib import examples
from batch_platform.lib.batch_files import manifest_path
from batch_platform.lib.validation import validate_batch


@pytest.fixture(scope="module")
def example():
    return examples.load_example("chicago_ridership")


@pytest.fixture(scope="module")
def origin(example):
    return examples.origin_table(example.origin)


def test_the_tables_are_the_data_set_reshaped_as_declared(example, origin):
    entries = examples.table_rows(example, "station_entries", origin)
    assert entries.column_names == ["service_date", "station", "entries"]
    assert len(set(entries.column("station").to_pylist())) == 20
    assert entries.num_rows == 20 * origin.num_rows  # every station on every day: one row each
    # the station columns are each station's entries 14 days earlier: Clark/Lake's matches the day's own count
    source = origin.to_pandas().set_index("date")
    clark = entries.filter(pc.equal(entries.column("station"), "Clark_Lake")).to_pandas().set_index("service_date")
    day = dt.date(2010, 3, 1)
    assert clark.loc[day, "entries"] == round(source.loc[day.isoformat(), "ridership"] * 1000)
    calendar = examples.table_rows(example, "station_calendar", origin)
    assert calendar.column_names == ["service_date", "station"] and calendar.num_rows == entries.num_rows
    assert examples.data_days(example, origin) == (dt.date(2001, 1, 22), dt.date(2016, 8, 14))


def test_landed_batches_are_valid_batches_of_their_day_published_when_declared(example, tmp_path):
    first, last = dt.date(2014, 1, 6), dt.date(2014, 1, 8)
    landed = {r.table: r for r in examples.land(example, tmp_path, first, last)}
    assert {t: r.days for t, r in landed.items()} == {t: (first, first + dt.timedelta(1), last) for t in landed}
    chicago = ZoneInfo("America/Chicago")
    for table, contract in example.contracts.items():
        for day in landed[table].days:
            path = tmp_path / table / f"{day}{contract.extension}"
            batch = validate_batch(path, contract, day)
            assert batch.row_count == (1 if table == "daily_weather" else 20)
            assert batch.published_at == dt.datetime.fromisoformat(
                json.loads(manifest_path(path).read_text())["published_at"])
            published = batch.published_at
            offset = -1 if table == "station_calendar" else 1  # the service plan the day before, counts the day after
            assert published == dt.datetime.combine(day + dt.timedelta(offset), dt.time(6), chicago)
    live = first + dt.timedelta(400)  # the live clock: the source day ``first`` lands as the day 400 days later
    assert {r.days for r in examples.land(example, tmp_path / "live", live, live, shift_days=400)} == {(live,)}
    relanded = validate_batch(tmp_path / "live" / "station_entries" / f"{live}.parquet",
                              example.contracts["station_entries"], live)
    assert relanded.row_count == 20


def test_an_example_that_does_not_fit_its_contracts_is_a_named_error(example, origin, tmp_path, monkeypatch):
    with pytest.raises(examples.ExampleError, match="no example 'nope': the examples are chicago_ridership"):
        examples.load_example("nope")
    folder = tmp_path / "chicago_ridership"
    shutil.copytree(example.folder, folder)
    monkeypatch.setattr(examples, "EXAMPLES_DIR", tmp_path)
    raw = yaml.safe_load((folder / "example.yaml").read_text())
    del raw["tables"]["daily_weather"]
    (folder / "example.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(examples.ExampleError, match=r"field tables must give a query .* missing \['daily_weather'\]"):
        examples.load_example("chicago_ridership")
    raw["tables"]["daily_weather"] = "SELECT CAST(\"date\" AS DATE) AS service_date FROM origin"
    (folder / "example.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(examples.ExampleError, match=r"tables.daily_weather gives columns \['service_date'\]"):
        examples.table_rows(examples.load_example("chicago_ridership"), "daily_weather", origin)
    raw["data"]["origin"] = {"http": "https://example.org/data.csv"}  # nothing is downloaded at run time
    (folder / "example.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(examples.ExampleError, match="data.origin must be one of"):
        examples.load_example("chicago_ridership")
