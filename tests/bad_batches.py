"""Ways an upstream batch goes bad. Each mutator rewrites a landed flights/weather CSV in place and, unless the
fault is damage in transit, rewrites its manifest to match (an upstream that exported bad data says so)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from batch_platform.lib import validation as v


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


def write(path: Path, data: bytes, *, update_manifest: bool = True, rows: int | None = None) -> None:
    path.write_bytes(data)
    mpath = Path(str(path) + ".manifest.json")
    if update_manifest and mpath.exists():
        manifest = json.loads(mpath.read_text())
        manifest["sha256"] = hashlib.sha256(data).hexdigest()
        if rows is not None:
            manifest["rows"] = rows
        mpath.write_text(json.dumps(manifest))


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write(path, buf.getvalue().encode(), rows=len(rows))


def set_value(path: Path, column: str, value: str, row: int = 0) -> None:
    header, rows = read_rows(path)
    rows[row][header.index(column)] = value
    write_rows(path, header, rows)


def missing_column(path: Path) -> None:
    header, rows = read_rows(path)
    i = header.index("dest")
    write_rows(path, header[:i] + header[i + 1:], [r[:i] + r[i + 1:] for r in rows])


def unexpected_column(path: Path) -> None:
    header, rows = read_rows(path)
    write_rows(path, header + ["surprise"], [r + ["1"] for r in rows])


def wrong_type(path: Path) -> None:
    set_value(path, "distance", "1,400 miles", row=3)


def null_key(path: Path) -> None:
    set_value(path, "carrier", "", row=2)


def duplicate_key(path: Path) -> None:
    header, rows = read_rows(path)
    write_rows(path, header, rows + [list(rows[5])])


def outside_day(path: Path) -> None:
    header, rows = read_rows(path)
    r = list(rows[0])
    r[header.index("day")] = str(int(r[header.index("day")]) + 1)
    r[header.index("flight")] = "9999"
    th = r[header.index("time_hour")]
    r[header.index("time_hour")] = th[:8] + f"{int(th[8:10]) + 1:02d}" + th[10:]
    write_rows(path, header, rows + [r])


def empty_file(path: Path) -> None:
    write(path, b"", rows=0)


def header_only(path: Path) -> None:
    header, _ = read_rows(path)
    write(path, (",".join(header) + "\n").encode(), rows=0)


def truncated_in_transit(path: Path) -> None:
    data = path.read_bytes()
    write(path, data[: len(data) // 2], update_manifest=False)


def truncated_mid_row(path: Path) -> None:
    data = path.read_bytes()
    cut = data[: len(data) // 2]
    cut = cut[: cut.rfind(b",") + 1]  # ends mid-row, a few fields short
    write(path, cut, rows=cut.count(b"\n") - 1 + 1)


def binary_garbage(path: Path) -> None:
    data = path.read_bytes()
    write(path, data[:200] + bytes(range(128, 256)) * 4 + data[200:])


def impossible_value(path: Path) -> None:
    set_value(path, "air_time", "-30", row=1)


def broken_row_rule(path: Path) -> None:
    header, rows = read_rows(path)
    rows[4][header.index("dest")] = rows[4][header.index("origin")]
    write_rows(path, header, rows)


def missing_manifest(path: Path) -> None:
    Path(str(path) + ".manifest.json").unlink()


def _edit_manifest(path: Path, **fields) -> None:
    mpath = Path(str(path) + ".manifest.json")
    manifest = json.loads(mpath.read_text())
    manifest.update(fields)
    mpath.write_text(json.dumps({k: v for k, v in manifest.items() if v is not ...}))


def manifest_empty(path: Path) -> None:
    """``{}``: it vouches for nothing (it used to skip the integrity check: a file short of rows loaded)."""
    truncate_rows(path)
    Path(str(path) + ".manifest.json").write_text("{}")


def manifest_sha256_null(path: Path) -> None:
    truncate_rows(path)
    _edit_manifest(path, sha256=None)


def manifest_rows_missing(path: Path) -> None:
    _edit_manifest(path, rows=...)


def manifest_of_another_day(path: Path) -> None:
    _edit_manifest(path, partition="2013-01-03")


def manifest_of_another_table(path: Path) -> None:
    _edit_manifest(path, table="weather")


def truncate_rows(path: Path) -> None:
    """The file loses its last 100 rows after the manifest was written (lines dropped, so it still parses)."""
    data = path.read_bytes().splitlines(keepends=True)
    write(path, b"".join(data[:-100]), update_manifest=False)


def fraction_in_integer_column(path: Path) -> None:
    set_value(path, "dep_delay", "4000.7", row=2)  # DuckDB's cast would store 4001


def utf8_bom(path: Path) -> None:
    write(path, b"\xef\xbb\xbf" + path.read_bytes())


def null_text_in_tailnum(path: Path) -> None:
    set_value(path, "tailnum", "NULL", row=4)  # would be stored as the tail number "NULL"


def arrival_delay_against_arrival_time(path: Path) -> None:
    """4000 minutes late on a flight whose arrival time says it was on time: a flipped label."""
    header, rows = read_rows(path)
    i = next(n for n, r in enumerate(rows) if r[header.index("arr_delay")] not in ("", "NA"))
    rows[i][header.index("arr_delay")] = "4000"
    write_rows(path, header, rows)


def cancelled_with_arrival_delay(path: Path) -> None:
    header, rows = read_rows(path)
    i = next(n for n, r in enumerate(rows) if r[header.index("dep_time")] in ("", "NA"))
    rows[i][header.index("arr_delay")] = "25"
    write_rows(path, header, rows)


# (mutator, the named error it must raise) for a flights batch
FLIGHTS_FAULTS = {
    "missing_column": (missing_column, v.MissingColumnError),
    "unexpected_column": (unexpected_column, v.UnexpectedColumnError),
    "wrong_type": (wrong_type, v.ColumnTypeError),
    "null_key": (null_key, v.NullKeyError),
    "duplicate_key": (duplicate_key, v.DuplicateKeyError),
    "rows_outside_day": (outside_day, v.OutsidePartitionError),
    "empty_file": (empty_file, v.EmptyBatchError),
    "header_only": (header_only, v.EmptyBatchError),
    "truncated_in_transit": (truncated_in_transit, v.ChecksumMismatchError),
    "truncated_mid_row": (truncated_mid_row, v.CorruptBatchError),
    "binary_garbage": (binary_garbage, v.EncodingError),
    "impossible_value": (impossible_value, v.ImpossibleValueError),
    "broken_row_rule": (broken_row_rule, v.RowRuleViolation),
    "missing_manifest": (missing_manifest, v.ExportNotFinishedError),
    "manifest_empty": (manifest_empty, v.ManifestError),
    "manifest_sha256_null": (manifest_sha256_null, v.ManifestError),
    "manifest_rows_missing": (manifest_rows_missing, v.ManifestError),
    "manifest_of_another_day": (manifest_of_another_day, v.ManifestError),
    "manifest_of_another_table": (manifest_of_another_table, v.ManifestError),
    "rows_dropped_after_export": (truncate_rows, v.ChecksumMismatchError),
    "fraction_in_integer_column": (fraction_in_integer_column, v.ColumnTypeError),
    "utf8_bom": (utf8_bom, v.EncodingError),
    "null_text_in_tailnum": (null_text_in_tailnum, v.UndeclaredNullTokenError),
    "arrival_delay_against_arrival_time": (arrival_delay_against_arrival_time, v.RowRuleViolation),
    "cancelled_with_arrival_delay": (cancelled_with_arrival_delay, v.RowRuleViolation),
}
