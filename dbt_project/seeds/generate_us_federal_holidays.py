"""Write the seed us_federal_holidays.csv (beside this file) from the `holidays` package.

One row per US federal holiday whose observed day off falls in FIRST_YEAR..LAST_YEAR: the eleven holidays the
package lists for the whole country (Juneteenth from 2021), observed as federal employees get them off (a
Saturday holiday on the Friday before, a Sunday holiday on the Monday after). One-off closures by executive
order (extra Christmas Eves, national days of mourning) are not included.

The CSV is committed, so `dbt seed` needs neither the network nor this package. Rerun the script only to change
the range or after upgrading `holidays`, then commit the CSV (tests/test_calendar.py fails while they differ):

    .venv/bin/python dbt_project/seeds/generate_us_federal_holidays.py
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import holidays

FIRST_YEAR, LAST_YEAR = 2000, 2045
SEED = Path(__file__).with_name("us_federal_holidays.csv")
COLUMNS = ("holiday_date", "holiday_name", "nominal_date")


def federal_holidays(first_year: int, last_year: int) -> list[tuple[dt.date, str, dt.date]]:
    """(holiday_date, holiday_name, nominal_date) sorted by date: the observed day off, the holiday's name, and
    the holiday's own date (one day away when it falls on a weekend)."""
    # The package lists a holiday that moves both on its own date and, named "<name> (observed)", on the day
    # off, which can lie in the next or previous year (New Year's Day 2022 was observed on 2021-12-31).
    nominal = holidays.US(years=range(first_year - 1, last_year + 2), observed=False)
    observed = holidays.US(years=range(first_year - 1, last_year + 2), observed=True)
    day_off_of = {}
    for day, label in observed.items():
        if day in nominal:
            continue
        holiday = [d for d in (day - dt.timedelta(days=1), day + dt.timedelta(days=1))
                   if d in nominal and nominal[d] in label]
        if len(holiday) != 1:
            raise ValueError(f"{day} {label!r}: expected one holiday a day away, found {holiday}")
        day_off_of[holiday[0]] = day
    rows = []
    for day, name in nominal.items():
        if ";" in name:  # the package joins the names of holidays sharing a date
            raise ValueError(f"{day}: two holidays on one date: {name!r}")
        day_off = day_off_of.get(day, day)
        if first_year <= day_off.year <= last_year:
            rows.append((day_off, name, day))
    return sorted(rows)


def to_csv(rows: list[tuple[dt.date, str, dt.date]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((day_off.isoformat(), name, day.isoformat()) for day_off, name, day in rows)
    return out.getvalue()


def main() -> None:
    rows = federal_holidays(FIRST_YEAR, LAST_YEAR)
    SEED.write_text(to_csv(rows))
    print(f"{SEED}: {len(rows)} holidays {rows[0][0]} .. {rows[-1][0]} (holidays {holidays.__version__})")


if __name__ == "__main__":
    main()
