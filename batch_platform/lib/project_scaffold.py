"""A new project folder, and a new raw table listed in its dbt project (``batch-platform new project``, ``new
source``).

:func:`new_project` writes the folder :mod:`batch_platform.lib.project` reads (``sources/``, ``models/``,
``time_model.yaml``, ``dbt/``, ``feature_repo/``) from the platform's template (``batch_platform/project_template``):
the dbt project on the platform's macros, its profile on the platform's warehouse, the raw source with the load log
and the staging view over it, the Feast repository on the platform's stores, and empty declarations to fill in. It
loads as a project before anything else is written: :func:`batch_platform.lib.time_model` reads its time model.

:func:`list_dbt_source` adds a table to the raw source of a project's dbt project and to the load log view's
``depends_on`` line, so dbt reads ``source('raw', TABLE)`` and rebuilds the view after each load.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from batch_platform.lib.contracts import IDENTIFIER

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "project_template"
MACROS_DIR = Path(__file__).resolve().parent.parent / "dbt_macros"
SOURCES_FILE = Path("dbt") / "models" / "staging" / "_sources.yml"
LOAD_LOG_VIEW = Path("dbt") / "models" / "staging" / "stg_batch_loads.sql"


class ProjectScaffoldError(ValueError):
    """The project cannot be written (a bad name or zone, a folder that is not empty) or its dbt sources cannot take
    a table (the file is not as the template wrote it)."""


def new_project(folder: Path, name: str, timezone: str) -> list[Path]:
    """Write project ``name`` (its dbt project and Feast project name) into ``folder`` (new or empty); its days are
    local dates in ``timezone``. Returns the files written."""
    if not IDENTIFIER.fullmatch(name):
        raise ProjectScaffoldError(f"{name!r} is not a plain lower-case identifier ([a-z_][a-z0-9_]*)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ProjectScaffoldError(f"{timezone!r} is not an IANA time zone") from e
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ProjectScaffoldError(f"{folder} is not empty: a new project goes into a new folder")
    written = []
    for template in sorted(p for p in TEMPLATE_DIR.rglob("*") if p.is_file()):
        target = folder / template.relative_to(TEMPLATE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (template.read_text().replace("__PROJECT__", name).replace("__TIMEZONE__", timezone)
                .replace("__MACROS__", str(MACROS_DIR)))
        target.write_text(text)
        written.append(target)
    for part in ("sources", "models"):
        (folder / part).mkdir(exist_ok=True)
    try:
        from batch_platform.lib.time_model import load_time_model

        load_time_model(folder / "time_model.yaml", contracts=())
    except Exception:
        shutil.rmtree(folder)
        raise
    return written


def list_dbt_source(project: Path, table: str, description: str, *, dry_run: bool = False) -> bool:
    """List raw ``table`` in ``project``'s dbt sources and the load log view's ``depends_on`` line. Returns False
    when it was listed already; ``dry_run``: only check that it can be (raises as a real run would)."""
    sources, view = Path(project) / SOURCES_FILE, Path(project) / LOAD_LOG_VIEW
    doc = yaml.safe_load(sources.read_text()) or {}
    raw = [s for s in doc.get("sources") or [] if s.get("name") == "raw"]
    if len(raw) != 1:
        raise ProjectScaffoldError(f"{sources}: one source named raw expected; list {table} by hand")
    if any(t.get("name") == table for t in raw[0].get("tables") or []):
        return False
    text = sources.read_text()
    entry = yaml.safe_dump([{"name": table, "description": description}], sort_keys=False, width=120)
    updated = text.rstrip("\n") + "\n" + "".join(f"      {line}\n" for line in entry.splitlines())
    after = yaml.safe_load(updated)
    listed = [t["name"] for s in after.get("sources") or [] if s.get("name") == "raw" for t in s.get("tables") or []]
    if table not in listed:  # the raw source's tables are not the file's last list (edited by hand)
        raise ProjectScaffoldError(f"{sources}: the raw source's tables are not the file's end; list {table} by hand")
    body = view.read_text()
    match = re.search(r"^-- depends_on:(.*)$", body, flags=re.M)
    if match is None:
        raise ProjectScaffoldError(f"{view}: no '-- depends_on:' line; add {{{{ source('raw', '{table}') }}}} by hand")
    names = match.group(1).strip()
    line = f"-- depends_on: {names + ', ' if names else ''}{{{{ source('raw', '{table}') }}}}"
    if dry_run:
        return True
    sources.write_text(updated)
    view.write_text(body[:match.start()] + line + body[match.end():])
    return True


__all__ = ["ProjectScaffoldError", "TEMPLATE_DIR", "list_dbt_source", "new_project"]
