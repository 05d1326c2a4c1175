"""Contract validation of landed batches (pure lib, no Dagster)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from batch_platform.lib import validation as v
from batch_platform.lib.contracts import CONTRACTS, FLIGHTS, WEATHER
from batch_platform.lib.landing import daily_batch_path, reference_batch_path
from tests.bad_batches import FLIGHTS_FAULTS, read_rows, set_value, write_rows

DAY = dt.date(2013, 1, 2)


@pytest.fixture
def landing(tmp_path, landed_days):
    dest = tmp_path / "landing"
    shutil.copytree(landed_days, dest)
    return dest


def test_real_batches_pass_their_contracts(landing):
    for contract in (FLIGHTS, WEATHER):
        batch = v.validate_batch(daily_batch_path(landing, contract.table, DAY), contract, DAY)
        assert batch.row_count > 0
        assert batch.data.column_names == contract.column_names
    for table in ("planes", "airports", "airlines"):
        assert v.validate_batch(reference_batch_path(landing, table), CONTRACTS[table]).row_count > 0


@pytest.mark.parametrize("fault", sorted(FLIGHTS_FAULTS))
def test_bad_flights_batch_is_rejected_with_a_named_error(landing, fault):
    mutate, expected = FLIGHTS_FAULTS[fault]
    path = daily_batch_path(landing, "flights", DAY)
    mutate(path)
    with pytest.raises(v.BatchRejected) as info:
        v.validate_batch(path, FLIGHTS, DAY)
    assert type(info.value) is expected, f"{fault}: got {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert str(path) in message and info.value.rule in message
    assert json.dumps(info.value.to_dict(), default=str)


def test_errors_carry_row_counts_and_example_keys(landing):
    path = daily_batch_path(landing, "flights", DAY)
    for row in (1, 7, 9):
        set_value(path, "air_time", "-5", row=row)
    with pytest.raises(v.ImpossibleValueError) as info:
        v.validate_batch(path, FLIGHTS, DAY)
    assert info.value.rows == 3
    assert len(info.value.examples) == 3
    assert all(ex[:3] == (2013, 1, 2) for ex in info.value.examples)  # keys: (year, month, day, carrier, flight, origin)


def test_wrong_partition_is_rejected(landing):
    path = daily_batch_path(landing, "flights", DAY)
    rows = v.validate_batch(path, FLIGHTS, DAY).row_count
    with pytest.raises(v.ManifestError, match="describes partition '2013-01-02', not '2013-01-03'"):
        v.validate_batch(path, FLIGHTS, DAY + dt.timedelta(days=1))
    # without a manifest (loads that do not require one) the rows' own dates are checked
    Path(str(path) + ".manifest.json").unlink()
    with pytest.raises(v.OutsidePartitionError) as info:
        v.validate_batch(path, FLIGHTS, DAY + dt.timedelta(days=1), require_manifest=False)
    assert info.value.rows == rows


def test_what_is_loaded_is_the_bytes_that_were_hashed(landing, monkeypatch):
    """The file is read once: replaced by another version right after that read, the batch is still the version
    that was hashed (its rows and its sha256), never a mix of both."""
    path = daily_batch_path(landing, "flights", DAY)
    original = v.validate_batch(path, FLIGHTS, DAY)
    copy = v._private_copy

    def then_replaced(src, folder):
        out = copy(src, folder)
        header, rows = read_rows(path)
        write_rows(path, header, rows[:-50])  # upstream re-exports a shorter version, manifest included
        return out

    monkeypatch.setattr(v, "_private_copy", then_replaced)
    batch = v.validate_batch(path, FLIGHTS, DAY)
    assert batch.file_sha256 == original.file_sha256 and batch.row_count == original.row_count
    assert v.file_sha256(path) != original.file_sha256


def test_weather_whose_hour_disagrees_with_its_instant_is_rejected(landing):
    path = daily_batch_path(landing, "weather", DAY)
    header, rows = read_rows(path)
    rows[3][header.index("hour")] = str((int(rows[3][header.index("hour")]) + 1) % 24)
    write_rows(path, header, rows)
    with pytest.raises(v.RowRuleViolation, match="hour_agrees_with_time_hour") as info:
        v.validate_batch(path, WEATHER, DAY)
    assert info.value.rows == 1


def test_a_day_redated_onto_the_start_of_daylight_saving_time_passes(tmp_path):
    """Re-dated by whole weeks, 2013-03-03 (hour 2 exists) falls on 2026-03-08, when 02:00 New York does not exist:
    its 02:00 observations are the instant 02:00 maps to (03:00 EDT), which the hour rule accepts."""
    from batch_platform.lib.clock import LIVE, DataClock
    from batch_platform.lib.landing import replay

    clock = DataClock(LIVE, (dt.date(2026, 3, 8) - dt.date(2013, 3, 3)).days)
    day = dt.date(2026, 3, 8)
    replay(tmp_path, day, day, tables=["weather"], clock=clock)  # the replay takes dates on its clock
    batch = v.validate_batch(daily_batch_path(tmp_path, "weather", day), WEATHER, day)
    assert batch.row_count > 60


def test_sensor_glitches_are_nulled_and_counted_not_rejected(landing):
    path = daily_batch_path(landing, "weather", DAY)
    nulls_before = v.validate_batch(path, WEATHER, DAY).data.column("wind_speed").null_count
    set_value(path, "wind_speed", "1048.36", row=3)
    batch = v.validate_batch(path, WEATHER, DAY)
    assert batch.nulled_out_of_range == {"wind_speed": 1}
    assert batch.data.column("wind_speed").null_count == nulls_before + 1


def test_missing_batch(landing):
    with pytest.raises(v.MissingBatchError):
        v.validate_batch(daily_batch_path(landing, "flights", dt.date(2013, 6, 1)), FLIGHTS, dt.date(2013, 6, 1))


def test_a_malformed_line_is_rejected_with_duckdbs_whole_diagnosis(landing):
    """The parse error names the line, shows it and says what is wrong with it (not only DuckDB's first line), and
    leaves out DuckDB's advice to relax the parser and its reader settings (which name the private copy)."""
    path = daily_batch_path(landing, "flights", DAY)
    header, rows = read_rows(path)
    rows[5] = rows[5] + ["surplus"]
    write_rows(path, header, rows)
    with pytest.raises(v.CorruptBatchError) as info:
        v.validate_batch(path, FLIGHTS, DAY)
    message = str(info.value)
    assert "Line: 7" in message  # the header is line 1
    assert f"Original Line: {','.join(rows[5])}" in message
    assert f"Expected Number of Columns: {len(header)} Found: {len(header) + 1}" in message
    assert "Possible fixes" not in message and ".incoming-" not in message and str(path) in message


def test_an_unterminated_quote_is_rejected_with_the_line_it_starts_on(landing):
    from tests.bad_batches import write

    path = daily_batch_path(landing, "flights", DAY)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b",", b',"', 1)  # the second field of line 4 opens a quote that never closes
    write(path, b"".join(lines))
    with pytest.raises(v.CorruptBatchError) as info:
        v.validate_batch(path, FLIGHTS, DAY)
    message = str(info.value)
    assert "Line: 4" in message and "unterminated quote" in message
    assert "Original Line: " + lines[3].decode().rstrip("\n")[:40] in message


def test_batches_are_checked_in_one_database_per_thread_which_survives_a_spill_and_a_rejection(landing, tmp_path):
    """Each thread checks its batches in one in-memory DuckDB database (a cursor per batch, not a database: opening
    one costs ~20 ms a batch). A database that spilled into a batch's working folder cannot move to the next one's:
    it is replaced; so is one whose batch was rejected. The checks give the same rows throughout."""
    import duckdb
    import pyarrow.parquet as pq

    day = dt.date(2013, 1, 2)
    path = daily_batch_path(landing, "flights", day)
    with v.validate_batch(path, FLIGHTS, day) as first:
        rows = pq.read_table(first.rows_path)
    db = v._SCRATCH.db
    with v.validate_batch(path, FLIGHTS, day) as again:
        assert pq.read_table(again.rows_path).equals(rows)
    assert v._SCRATCH.db is db  # reused, not reopened

    spilled = tmp_path / "spilled"
    spilled.mkdir()
    with v._scratch_session(spilled, "64MB") as con:  # a sort larger than the cap spills into the folder
        con.execute("CREATE TEMP TABLE big AS SELECT range AS x, md5(range::VARCHAR) AS y FROM range(3000000)")
        assert con.execute("SELECT count(*) FROM (SELECT * FROM big ORDER BY y)").fetchall() == [(3_000_000,)]
    assert any((spilled / "duckdb.tmp").iterdir())
    with pytest.raises(duckdb.Error, match="temporary directory"):
        v._SCRATCH.db.cursor().execute(f"SET temp_directory = '{tmp_path / 'elsewhere'}'")
    shutil.rmtree(spilled)  # (as a batch's working folder is removed once it is loaded)
    with v.validate_batch(path, FLIGHTS, day) as after_spill:
        assert pq.read_table(after_spill.rows_path).equals(rows)
    assert v._SCRATCH.db is not db

    bad = tmp_path / "flights" / path.name
    bad.parent.mkdir()
    shutil.copy(path, bad)
    set_value(bad, "dep_delay", "NULL")
    db = v._SCRATCH.db
    with pytest.raises(v.UndeclaredNullTokenError):
        v.validate_batch(bad, FLIGHTS, day, require_manifest=False)
    assert v._SCRATCH.db is None or v._SCRATCH.db is not db
    with v.validate_batch(path, FLIGHTS, day) as after_rejection:
        assert pq.read_table(after_rejection.rows_path).equals(rows)
