"""A draft source contract from a sample file, for the user to review (``batch-platform new source``).

:func:`draft_contract` reads a sample CSV or Parquet file with DuckDB's type detection and proposes, per column, the
contract type (integers ``BIGINT``, decimals ``DOUBLE``, dates ``DATE``, timestamps ``TIMESTAMPTZ``, everything
else ``VARCHAR``), whether it is nullable (nulls seen in the sample), the null tokens the file uses (of the
null-like texts, those that occur), a key (the smallest set of up to three columns that no two sample rows share,
none of them null), and the day (one ``DATE`` column, the ``year``/``month``/``day`` columns, or the first
timestamp column; none: a reference snapshot). Observed value ranges are written as comments, not as bounds: a
contract's ranges are physical facts, and a sample only shows what happened to occur.

The draft loads as a contract (:func:`batch_platform.lib.contracts.load_contracts`) before it is written; what it
cannot know is marked ``REVIEW``: the publication time, the time zone, the key among the candidates, descriptions.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from batch_platform.lib.contracts import IDENTIFIER, NULL_LIKE

MAX_KEY_COLUMNS = 3
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT"}


class ScaffoldError(ValueError):
    """The sample cannot become a draft contract (unreadable, empty, a column name that is not an identifier)."""


@dataclass
class Draft:
    """A proposed contract (``doc``, as its YAML fields) and what the user must review."""

    doc: dict
    review: list[str] = field(default_factory=list)
    observed: dict[str, str] = field(default_factory=dict)
    """Per column: the range or distinct count seen in the sample (written as a comment)."""
    key_candidates: list[tuple[str, ...]] = field(default_factory=list)

    def to_yaml(self) -> str:
        lines = [f"# Draft contract of raw.{self.doc['table']}, inferred from a sample by `batch-platform new source`.",
                 "# REVIEW before use: " + "; ".join(self.review),
                 "# Fields: see the README, \"Source contracts\"."]
        body = yaml.safe_dump(self.doc, sort_keys=False, width=120, default_flow_style=None)
        for line in body.splitlines():
            name = line.strip().removeprefix("- {name: ").split(",")[0] if line.strip().startswith("- {name:") else ""
            lines.append(f"{line}  # seen: {self.observed[name]}" if name in self.observed else line)
        return "\n".join(lines) + "\n"


def _relation(sample: Path, *, text: bool = False, tokens: tuple[str, ...] = ()) -> str:
    path = str(sample).replace("'", "''")
    if sample.suffix == ".parquet":
        return f"read_parquet('{path}')"
    if sample.suffix != ".csv":
        raise ScaffoldError(f"{sample}: a sample is a .csv or .parquet file")
    if text:
        return f"read_csv('{path}', all_varchar = true)"
    nulls = ", ".join("'" + t.replace("'", "''") + "'" for t in tokens)
    return f"read_csv('{path}', nullstr = [{nulls}])" if tokens else f"read_csv('{path}')"


def _null_tokens(con: duckdb.DuckDBPyConnection, sample: Path) -> tuple[str, ...]:
    """The null-like texts (:data:`NULL_LIKE`) the CSV sample uses, and the empty field."""
    con.execute(f"CREATE TABLE t AS SELECT * FROM {_relation(sample, text=True)}")
    columns = [r[0] for r in con.execute("DESCRIBE t").fetchall()]
    found = {tok for c in columns for tok in NULL_LIKE if tok and con.execute(
        f'SELECT count(*) FROM t WHERE trim("{c}") = ?', [tok]).fetchall()[0][0]}
    return ("", *sorted(found))


def _type(duck: str) -> str:
    base = duck.split("(")[0].upper()
    if base in INTEGER_TYPES:
        return "BIGINT"
    if base in ("DOUBLE", "FLOAT", "REAL", "DECIMAL"):
        return "DOUBLE"
    if base == "DATE":
        return "DATE"
    if base.startswith("TIMESTAMP"):
        return "TIMESTAMPTZ"
    return "VARCHAR"


def draft_contract(name: str, sample: Path, *, timezone: str = "UTC") -> Draft:
    """The draft contract of table ``name`` from ``sample`` (see the module docstring)."""
    if not IDENTIFIER.fullmatch(name):
        raise ScaffoldError(f"{name!r} is not a plain lower-case identifier ([a-z_][a-z0-9_]*)")
    sample = Path(sample)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        try:
            tokens = _null_tokens(con, sample) if sample.suffix == ".csv" else ("",)
            con.execute(f"CREATE TABLE s AS SELECT * FROM {_relation(sample, tokens=tokens)}")
        except duckdb.Error as e:
            raise ScaffoldError(f"{sample}: cannot read: {str(e).splitlines()[0]}") from e
        described = con.execute("DESCRIBE s").fetchall()
        n = con.execute("SELECT count(*) FROM s").fetchall()[0][0]
        if n == 0:
            raise ScaffoldError(f"{sample}: no rows to infer from")
        bad = [c for c, *_ in described if not IDENTIFIER.fullmatch(c)]
        if bad:
            raise ScaffoldError(f"{sample}: column name(s) {bad} are not plain lower-case identifiers: rename them "
                                "upstream (a contract never quotes a name)")
        types = {c: _type(t) for c, t, *_ in described}
        draft = Draft(doc={})
        columns = []
        for c, duck, *_ in described:
            nulls, distinct = con.execute(f'SELECT count(*) - count("{c}"), count(DISTINCT "{c}") FROM s').fetchall()[0]
            entry = {"name": c, "type": types[c], "nullable": bool(nulls), "description": f"REVIEW: {c}."}
            columns.append(entry)
            if types[c] in ("BIGINT", "DOUBLE", "DATE", "TIMESTAMPTZ"):
                lo, hi = con.execute(f'SELECT min("{c}"), max("{c}") FROM s').fetchall()[0]
                draft.observed[c] = f"{lo} .. {hi}, {nulls} null(s) of {n}"
            else:
                draft.observed[c] = f"{distinct} distinct, {nulls} null(s) of {n}"
            if duck.upper() == "BOOLEAN":
                draft.review.append(f"{c} is true/false in the sample (declared VARCHAR: no BOOLEAN type)")
            if duck.upper() == "TIMESTAMP":
                draft.review.append(f"{c} has no zone in the sample: its texts are read as UTC instants")
        keys = _key_candidates(con, [c for c, t in types.items() if t != "DOUBLE"],
                               {c["name"] for c in columns if not c["nullable"]}, n)
    day = _day(types)
    doc = {"table": name, "source": "raw", "version": "1", "kind": "daily" if day else "snapshot",
           "description": f"REVIEW: what one row of {name} is, and how it is landed.",
           "published": {"day_offset": 1, "local_time": "06:00"}}
    if sample.suffix == ".parquet":
        doc["format"] = "parquet"
    doc["null_tokens"] = list(tokens)
    doc["columns"] = columns
    if day:
        key = next((k for k in keys if set(day) & set(k)), keys[0] if keys else None)
    else:
        key = keys[0] if keys else None
    if key is None:
        raise ScaffoldError(f"{sample}: no set of up to {MAX_KEY_COLUMNS} columns is unique in the sample: "
                            "declare the key by hand")
    doc["key"] = list(key)
    if day:
        doc["partitioning"] = day | {"timezone": timezone}
    draft.doc = doc
    draft.key_candidates = keys
    draft.review += [
        "published (when a batch lands: day_offset days after its day, at local_time)",
        f"the key ({', '.join(key)}; candidates in the sample: {'; '.join(', '.join(k) for k in keys[:5])})",
        "descriptions",
        "ranges (min/max: physical bounds; the sample's are in the comments)",
    ]
    if day:
        draft.review.insert(1, f"partitioning.timezone ({timezone}: the zone of a day's local date)")
    return draft


def _day(types: dict[str, str]) -> dict | None:
    dates = [c for c, t in types.items() if t == "DATE"]
    if dates:
        return {"date_columns": [dates[0]]}
    if all(types.get(c) == "BIGINT" for c in ("year", "month", "day")):
        instant = next((c for c, t in types.items() if t == "TIMESTAMPTZ"), None)
        return {"date_columns": ["year", "month", "day"]} | ({"instant_column": instant} if instant else {})
    instant = next((c for c, t in types.items() if t == "TIMESTAMPTZ"), None)
    return {"instant_column": instant} if instant else None


def _key_candidates(con: duckdb.DuckDBPyConnection, columns: list[str], not_null: set[str],
                    n: int) -> list[tuple[str, ...]]:
    """Minimal column sets (up to :data:`MAX_KEY_COLUMNS`, no null in the sample) no two sample rows share."""
    found: list[tuple[str, ...]] = []
    usable = [c for c in columns if c in not_null]
    for size in range(1, MAX_KEY_COLUMNS + 1):
        for combo in itertools.combinations(usable, size):
            if any(set(k) <= set(combo) for k in found):
                continue  # not minimal
            cols = ", ".join(f'"{c}"' for c in combo)
            if con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {cols} FROM s)").fetchall()[0][0] == n:
                found.append(combo)
        if found and size >= 2:
            break
    return found


def write_draft(draft: Draft, folder: Path, *, force: bool = False) -> Path:
    """Write ``draft`` as ``<folder>/<table>.yaml`` after checking that it loads as a contract with the folder's
    other contracts; an existing file is kept unless ``force``."""
    import tempfile

    from batch_platform.lib.contracts import load_contracts

    folder = Path(folder)
    path = folder / f"{draft.doc['table']}.yaml"
    if path.exists() and not force:
        raise ScaffoldError(f"{path} exists: review it, or pass --force to replace it")
    text = draft.to_yaml()
    with tempfile.TemporaryDirectory() as tmp:
        for other in folder.glob("*.yaml") if folder.is_dir() else ():
            if other.name != path.name:
                (Path(tmp) / other.name).write_text(other.read_text())
        (Path(tmp) / path.name).write_text(text)
        load_contracts(tmp)  # the draft is a valid contract beside the others (or this raises, naming the field)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path




# ------------------------------------------------------------------------------------------------- new model
def draft_spec(name: str, template: dict, *, label_model: str | None, label: str | None,
               definition: str | None) -> dict:
    """A model spec for ``name`` from an existing spec's fields (``template``): its own name, feature service
    (``<name>_v1``) and, when given, label model and label expression; everything else as the template has it,
    for review."""
    if not IDENTIFIER.fullmatch(name):
        raise ScaffoldError(f"{name!r} is not a plain lower-case identifier ([a-z_][a-z0-9_]*)")
    spec = yaml.safe_load(yaml.safe_dump(template))
    spec["name"] = name
    spec["description"] = f"REVIEW: what {name} predicts, for whom, and when it is scored."
    spec["feature_service"] = f"{name}_v1"
    if label_model:
        spec["label"]["model"] = label_model
    if label:
        spec["label"].pop("column", None)
        spec["label"]["expression"] = label
        spec["label"]["definition"] = definition or f"REVIEW: {label}"
    return spec


def skeleton_spec(name: str, *, metric: str, key: str, join_keys: list[str], label_model: str, label: str,
                  definition: str | None, date_column: str, frame_model: str, views: list[str],
                  timezone: str) -> dict:
    """A model spec for ``name`` from nothing but its names: the entity, the label (a column of ``label_model`` when
    ``label`` is a plain name, else a SQL expression over it), the frame scored each evening, the feature views of
    its service (``<name>_v1``, and the fallback's required views), the gate metric (a regression for rmse/mae) and
    the platform's defaults for everything else, for review."""
    from batch_platform.lib.gate import REGRESSION_METRICS

    for value in (name, key, *join_keys, label_model, date_column, frame_model, *views):
        if not IDENTIFIER.fullmatch(value):
            raise ScaffoldError(f"{value!r} is not a plain lower-case identifier ([a-z_][a-z0-9_]*)")
    regression = metric in REGRESSION_METRICS
    target = {"column": label} if IDENTIFIER.fullmatch(label) else {"expression": label}
    gate = ({"metric": metric, "tolerance": 0.0, "floor": 0.9, "floor_basis": "baseline", "slices": []} if regression
            else {"metric": metric, "tolerance": 0.005, "floor": 0.6, "slices": []})
    return {
        "name": name,
        "description": f"REVIEW: what {name} predicts, for whom, and when it is scored.",
        "entity": {"key": key, "join_keys": list(join_keys)},
        "label": {"model": label_model, **target, "definition": definition or f"REVIEW: {label}",
                  "date_column": date_column, "embargo_days": 1},
        "cutoff": {"days_before": 1, "local_time": "18:00", "timezone": timezone},
        "feature_service": f"{name}_v1",
        "passthrough_features": [],
        "categorical_features": [],
        "windows": {"train_days": 56, "validation_days": 14, "test_days": 14},
        "gate": gate,
        "scoring": {"model": frame_model, "deadline_local_time": "20:00", "online_ttl_hours": 36,
                    "fallback": {"required_feature_views": list(views), "segment": [], "max_share": 0.2}},
        "monitoring": {"accuracy_tolerance": 0.05},
        "promotion": {"shadow_min_days": 3},
    }


SKELETON_REVIEW = ("the label's embargo_days (when a day's label is final)", "the cutoff (when the features of a day "
                   "must be valid)", "windows", "the gate's tolerance and floor (in the metric's unit)",
                   "passthrough and categorical features (columns of the label model and the frame)",
                   "monitoring.accuracy_tolerance (in the metric's unit)", "promotion")
"""What a skeleton spec cannot know (its header comment lists these)."""


def add_feature_service(declaration: Path, name: str, like: str | None, views: list[str] | None) -> dict:
    """Append feature service ``name`` to the Feast declaration ``features.yaml``: the given ``views`` (each
    whole), or the projections of service ``like``. Returns the entry; an existing service of that name is an
    error (a service is immutable once a model depends on it)."""
    doc = yaml.safe_load(declaration.read_text())
    services = doc.setdefault("feature_services", [])
    if any(s["name"] == name for s in services):
        raise ScaffoldError(f"{declaration}: feature service {name!r} exists (services are immutable: name a new one)")
    if views:
        declared = {v["name"] for v in doc.get("feature_views", [])}
        unknown = [v for v in views if v not in declared]
        if unknown:
            raise ScaffoldError(f"{declaration}: view(s) {unknown} are not declared ({sorted(declared)})")
        chosen: list = list(views)
    else:
        template = next((s for s in services if s["name"] == like), None)
        if template is None:
            raise ScaffoldError(f"{declaration}: no feature service {like!r} to copy; pass --views")
        chosen = template["views"]
    entry = {"name": name, "description": f"REVIEW: the features of {name.removesuffix('_v1')}.", "views": chosen}
    # appended as text, so the file's comments stay: under `feature_services:` when it is the last top-level key
    text = re.sub(r"^feature_services: *\[\] *$", "feature_services:", declaration.read_text(), flags=re.M)
    keys = [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()]
    if "feature_services" in keys and keys[-1] != "feature_services":
        raise ScaffoldError(f"{declaration}: feature_services is not the file's last section; add {name} by hand")
    block = yaml.safe_dump([entry], sort_keys=False, width=120)
    addition = ("" if "feature_services" in keys else "\nfeature_services:\n") + \
        "".join(f"  {line}\n" for line in block.splitlines())
    declaration.write_text(text.rstrip("\n") + "\n" + addition)
    return entry


__all__ = ["Draft", "ScaffoldError", "add_feature_service", "draft_contract", "draft_spec", "skeleton_spec",
           "write_draft"]
