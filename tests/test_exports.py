"""A user's export landed as batches (``batch-platform land-file``): read against the contract with named errors,
cut into one batch per published day, the derived tables with it (never over a derived batch already landed), and
the calendar clock it puts a data dir on."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from batch_platform.lib import clock as clocks
from batch_platform.lib.batch_files import manifest_path
from batch_platform.lib.contracts import _load
from batch_platform.lib.exports import ExportError, land_export, read_export
from batch_platform.lib.ingest import daily_batches, lead_days
from batch_platform.lib.time_model import load_time_model

SALES = """table: sales
version: "1"
kind: daily
description: "Units per shop and day."
published: {day_offset: 1, local_time: "06:00"}
null_tokens: [""]
columns:
  - {name: sale_date, type: DATE, nullable: false, description: "The day."}
  - {name: shop, type: VARCHAR, nullable: false, description: "The shop."}
  - {name: units, type: BIGINT, nullable: true, description: "Units sold.", min: 0}
  - {name: promo, type: BIGINT, nullable: false, description: "1 when a promotion runs."}
key: [sale_date, shop]
partitioning: {date_columns: [sale_date], timezone: Europe/Berlin}
"""
PLAN = """table: plan
version: "1"
kind: derived
description: "The promotions of a day, published two mornings before."
published: {day_offset: -2, local_time: "06:00"}
derived_from: sales
columns: [sale_date, shop, promo]
"""
TIME_MODEL = "timezone: Europe/Berlin\nfeatures: {}\nlabels: {}\nframes: {}\n"
D = dt.date(2024, 3, 4)


@pytest.fixture
def project(tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "sales.yaml").write_text(SALES)
    (sources / "plan.yaml").write_text(PLAN)
    contracts, derived = _load(sources)
    (tmp_path / "time_model.yaml").write_text(TIME_MODEL)
    tm = load_time_model(tmp_path / "time_model.yaml", contracts=contracts.values())
    return contracts, derived, tm


def _export(path, days, *, units="12"):
    path.write_text("sale_date,shop,units,promo\n" + "".join(
        f"{d},{shop},{units if shop == 'a' else ''},{int(shop == 'b')}\n" for d in days for shop in "ab"))
    return path


def test_an_export_of_many_days_lands_a_batch_per_published_day_with_its_derived_table(tmp_path, project):
    contracts, derived, tm = project
    landing = tmp_path / "landing"
    days = [D + dt.timedelta(days=i) for i in range(4)]
    now = tm.published_at("sales", days[2])  # D+2's batch is out this instant; D+3's tomorrow
    landed = {x.table: x for x in land_export(landing, contracts, derived, "sales", _export(tmp_path / "s.csv", days),
                                              time_model=tm, now=now)}
    assert landed["sales"].days == tuple(days[:3]) and landed["sales"].not_yet_published == (days[3],)
    assert landed["plan"].days == tuple(days)  # published two mornings before: all out by now
    manifest = json.loads(manifest_path(landing / "sales" / f"{days[0]}.csv").read_text())
    assert manifest["rows"] == 2 and manifest["published_at"] == "2024-03-05T05:00:00Z"  # D+1 06:00 Berlin (CET)
    assert (landing / "plan" / f"{days[0]}.csv").read_text().splitlines() == \
        ["sale_date,shop,promo", f"{days[0]},a,0", f"{days[0]},b,1"]
    # a published plan is never rewritten from the actuals; the sales batches land unchanged again
    (landing / "plan" / f"{days[1]}.csv").write_text("sale_date,shop,promo\n")  # what upstream published then
    again = {x.table: x for x in land_export(landing, contracts, derived, "sales", _export(tmp_path / "s.csv", days),
                                             time_model=tm, now=now + dt.timedelta(days=1))}
    assert again["plan"].days == () and again["plan"].files_written == 0
    assert (landing / "plan" / f"{days[1]}.csv").read_text() == "sale_date,shop,promo\n"
    assert again["sales"].days == tuple(days) and again["sales"].files_written == 1  # only D+3 is new
    # a derived table's own export (its days to come) lands as any table's
    ahead = tmp_path / "p.csv"
    ahead.write_text(f"sale_date,shop,promo\n{days[3] + dt.timedelta(days=1)},a,1\n")
    (plan,) = land_export(landing, contracts, derived, "plan", ahead, time_model=tm, now=now)
    assert plan.days == (days[3] + dt.timedelta(days=1),)


def test_what_cannot_be_landed_is_named_and_nothing_lands(tmp_path, project):
    contracts, derived, tm = project
    landing = tmp_path / "landing"
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ExportError, match=r"column units: 'many' is not a BIGINT"):
        land_export(landing, contracts, derived, "sales", _export(tmp_path / "s.csv", [D], units="many"),
                    time_model=tm, now=now)
    other = tmp_path / "o.csv"
    other.write_text("sale_date,shop,units,promo,colour\n2024-03-04,a,1,0,red\n")
    with pytest.raises(ExportError, match=r"missing \[\], undeclared \['colour'\]"):
        read_export(other, contracts["sales"])
    with pytest.raises(ExportError, match="a .csv or .parquet file"):
        read_export(tmp_path / "s.json", contracts["sales"])
    with pytest.raises(ExportError, match="no contract declares table 'stock'"):
        land_export(landing, contracts, derived, "stock", other, time_model=tm, now=now)
    assert not landing.exists()


def test_the_batches_of_a_range_follow_each_tables_publication(project):
    contracts, _, _ = project
    daily = (contracts["sales"], contracts["plan"])
    assert lead_days(contracts["plan"]) == 2 and lead_days(contracts["sales"]) == 0
    clock = clocks.calendar_clock(D)
    got = [(d, [c.table for c in cs]) for d, cs in daily_batches(D, D + dt.timedelta(days=1), clock, contracts=daily)]
    e = D + dt.timedelta(days=1)
    assert got == [(D, ["sales", "plan"]), (e, ["sales", "plan"]), (e + dt.timedelta(days=1), ["plan"]),
                   (e + dt.timedelta(days=2), ["plan"])]


def test_the_calendar_clock_keeps_real_dates_and_has_no_end(tmp_path):
    clock = clocks.calendar_clock(D)
    assert clock.is_live and clock.is_calendar and clock.fixed_end is None and clock.first_day == D
    assert clock.describe(D) == D.isoformat() and clock.label == f"calendar dates (data from {D})"
    path = tmp_path / "clock.json"
    assert clocks.record_clock(path, clock) == clocks.read_clock(path) == clock
    with pytest.raises(clocks.ClockMismatch):
        clocks.record_clock(path, clocks.calendar_clock(D - dt.timedelta(days=1)))
    with pytest.raises(ValueError, match="keeps the source's dates"):
        clocks.DataClock(clocks.CALENDAR, 7)
