"""The calendar features: the committed US federal holidays seed is what its generator (the `holidays` package)
writes, it covers any date the replayed data may be moved to, and dbt's int_calendar_days finds the holidays."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from batch_platform import settings

GENERATOR = settings.HOLIDAYS_CSV.with_name("generate_us_federal_holidays.py")


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate_us_federal_holidays", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_seed_is_what_the_generator_writes(generator):
    expected = generator.to_csv(generator.federal_holidays(generator.FIRST_YEAR, generator.LAST_YEAR))
    assert generator.SEED.read_text() == expected, f"rerun {GENERATOR.name} and commit the CSV"


def test_seed_covers_2000_to_2045_with_observed_days_off(generator):
    rows = generator.federal_holidays(generator.FIRST_YEAR, generator.LAST_YEAR)
    assert (generator.FIRST_YEAR, generator.LAST_YEAR) == (2000, 2045)
    per_year = {}
    for day_off, _, _ in rows:
        per_year[day_off.year] = per_year.get(day_off.year, 0) + 1
    assert sorted(per_year) == list(range(2000, 2046))
    # ten holidays a year, eleven with Juneteenth from 2021; New Year's Day moves into the year before when it
    # is a Saturday (2000 has nine: its New Year's Day was observed on 1999-12-31)
    assert per_year[2000] == 9 and per_year[2013] == 10 and per_year[2021] == 12 and per_year[2022] == 10
    by_day = {day_off: (name, day) for day_off, name, day in rows}
    assert by_day[dt.date(2012, 1, 2)] == ("New Year's Day", dt.date(2012, 1, 1))  # Sunday → Monday
    assert by_day[dt.date(2021, 12, 31)] == ("New Year's Day", dt.date(2022, 1, 1))  # Saturday → Friday before
    assert by_day[dt.date(2013, 7, 4)] == ("Independence Day", dt.date(2013, 7, 4))
    assert by_day[dt.date(2026, 11, 26)] == ("Thanksgiving Day", dt.date(2026, 11, 26))
    juneteenth = [day_off for day_off, name, _ in rows if name.startswith("Juneteenth")]
    assert juneteenth[0] == dt.date(2021, 6, 18) and len(juneteenth) == 25
    assert all(day_off.isoweekday() <= 5 for day_off, _, _ in rows)


def test_dbt_calendar_days_cover_the_seed_range(tmp_path):
    """`dbt build` of the seed and int_calendar_days (with their data and unit tests) in an empty warehouse (by
    hand, dbt builds feature generation `a`: schema intermediate__a, unpublished)."""
    db = tmp_path / "w.duckdb"
    env = {**os.environ, settings.WAREHOUSE_VAR: str(db), settings.GENERATIONS_VAR: str(tmp_path / "generations")}
    env.pop(settings.DBT_GENERATION_VAR, None)
    dbt = Path(sys.executable).parent / "dbt"
    out = subprocess.run([str(dbt), "build", "--select", "us_federal_holidays", "int_calendar_days",
                          "--profiles-dir", ".", "--target-path", str(tmp_path / "target"),
                          "--log-path", str(tmp_path / "logs")],
                         cwd=settings.DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "ERROR=0" in out.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        first, last, n_days, n_holidays = con.execute(
            "SELECT min(calendar_date), max(calendar_date), count(*), count(*) FILTER (is_federal_holiday) "
            "FROM intermediate__a.int_calendar_days").fetchone()
        assert (first, last) == (dt.date(2000, 1, 17), dt.date(2045, 12, 25))
        assert n_days == (last - first).days + 1
        assert n_holidays == con.execute("SELECT count(*) FROM seeds__a.us_federal_holidays").fetchone()[0]
        distance = dict(con.execute(
            "SELECT calendar_date, days_to_nearest_holiday FROM intermediate__a.int_calendar_days "
            "WHERE calendar_date IN ('2013-07-04', '2013-07-01', '2026-11-26', '2026-11-29', '2021-12-31')"
        ).fetchall())
    assert distance == {dt.date(2013, 7, 4): 0, dt.date(2013, 7, 1): 3,  # Independence Day
                        dt.date(2026, 11, 26): 0, dt.date(2026, 11, 29): 3,  # Thanksgiving
                        dt.date(2021, 12, 31): 0}  # New Year's Day 2022, observed
