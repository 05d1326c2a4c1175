"""Target folders of dbt invocations, one per invocation under a data dir's root, with dbt's parse state carried
from one invocation to the next.

dbt re-parses the whole project (~3 s here) unless the target folder holds a ``partial_parse.msgpack`` written
against the same profile and environment. Our profile names the warehouse file and each build names the feature
generation it writes (schemas, folder), so the root keeps one parse state per warehouse and generation
(``partial_parse-<sha256 of both, 12 hex>.msgpack``). Each invocation starts from the copy for its warehouse
(:func:`new_invocation`) and leaves its own there when it ends (:func:`keep_parse_state`). Only the newest ``keep``
invocation folders are kept (dbt's logs and run results of recent builds).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

PARSE_STATE = "partial_parse.msgpack"  # the name dbt reads in its target folder
KEEP = 20


def _state_path(root: Path, warehouse: Path, generation: str = "") -> Path:
    digest = hashlib.sha256((str(Path(warehouse).resolve()) + "\0" + generation).encode()).hexdigest()[:12]
    return root / f"partial_parse-{digest}.msgpack"


def new_invocation(root: Path, label: str, warehouse: Path, generation: str = "") -> Path:
    """A fresh target folder ``root/<label>-<random>`` holding the parse state last kept for ``warehouse`` and
    ``generation``."""
    target = root / f"{label}-{uuid.uuid4().hex[:8]}"
    target.mkdir(parents=True)
    state = _state_path(root, warehouse, generation)
    if state.exists():
        shutil.copy2(state, target / PARSE_STATE)
    return target


def keep_parse_state(root: Path, target: Path, warehouse: Path, generation: str = "", keep: int = KEEP) -> None:
    """Keep ``target``'s parse state for ``warehouse`` (replaced atomically: a concurrent invocation copies the old
    or the new file, never half of one), then remove all but the newest ``keep`` invocation folders."""
    state = target / PARSE_STATE
    if state.exists():
        tmp = root / f".{PARSE_STATE}.{uuid.uuid4().hex[:8]}"
        shutil.copy2(state, tmp)
        os.replace(tmp, _state_path(root, warehouse, generation))
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)
