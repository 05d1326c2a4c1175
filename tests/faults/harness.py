"""The fault suite's harness: a platform instance (data folder + Dagster instance) driven through the real CLI in
subprocesses, copied between trials, crashed with SIGKILL at named crash points (``lib/faults.py``) or after a
seeded delay, and compared by what readers can see."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from batch_platform import settings
from batch_platform.lib.faults import CRASH_VAR
from tests.conftest import platform_env_vars, project_dagster_home

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "batch-platform")
COMMAND_TIMEOUT_S = 420
REPORT = ROOT / ".test-artifacts" / "faults" / "report.json"
SPEC = "flight_cancellation"


@dataclass
class Instance:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PLATFORM_") and k != CRASH_VAR}
        paths = platform_env_vars(self.root)  # specs: <root>/specs, the shipped flight_cancellation alone
        env.update({k: str(v) for k, v in paths.items()})
        env["DAGSTER_HOME"] = str(self.home)
        return env

    @classmethod
    def create(cls, root: Path) -> Instance:
        from batch_platform.lib.specs import DEFAULT_SPECS_DIR

        inst = cls(root)
        root.mkdir(parents=True, exist_ok=True)
        project_dagster_home(root)
        (root / "specs").mkdir()
        # one spec, whose gate passes on the suite's 20 days (so every stage has something to do), at half the cost
        shutil.copy(DEFAULT_SPECS_DIR / f"{SPEC}.yaml", root / "specs" / f"{SPEC}.yaml")
        return inst

    def copy(self, dest: Path) -> Instance:
        shutil.copytree(self.root, dest, symlinks=True)
        return Instance(dest)

    def cli(self, *args: str, crash_at: str | None = None, timeout: float = COMMAND_TIMEOUT_S,
            kill_when: Path | None = None, kill_after_s: float | None = None) -> subprocess.CompletedProcess:
        """Run ``batch-platform ARGS``. ``crash_at``: SIGKILL at that crash point. ``kill_when`` + ``kill_after_s``:
        SIGKILL the command ``kill_after_s`` seconds after the folder ``kill_when`` gets a new entry (at once
        without ``kill_when``)."""
        env = self.env()
        if crash_at:
            env[CRASH_VAR] = crash_at
        proc = subprocess.Popen([CLI, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        if kill_after_s is not None:
            deadline = time.monotonic() + timeout
            before = set(kill_when.iterdir()) if kill_when and kill_when.exists() else set()
            while kill_when is not None and proc.poll() is None and time.monotonic() < deadline:
                if kill_when.exists() and set(kill_when.iterdir()) - before:
                    break
                time.sleep(0.1)
            time.sleep(kill_after_s)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---------------------------------------------------------------------------------------------- what readers see

VOLATILE = {"run_id", "scored_at", "loaded_at", "_batch_file", "created_at", "published_at_run", "model_version",
            "feature_fingerprint"}


def _digest(con, relation: str) -> tuple[int, int]:
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall() if r[0] not in VOLATILE]
    if not cols:
        return con.execute(f"SELECT count(*), 0 FROM {relation}").fetchall()[0]
    row = ", ".join(f'"{c}"' for c in cols)
    return tuple(con.execute(f"SELECT count(*), coalesce(bit_xor(hash({row})), 0) FROM {relation}").fetchall()[0])


def warehouse_state(inst: Instance, schemas=("raw", "staging", "intermediate", "marts", "seeds", "predictions")) -> dict:
    """(rows, content hash without run ids and timestamps) of every relation readers use."""
    db = inst.data / "warehouse.duckdb"
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as con:
        names = [r[0] for r in con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN "
            f"({', '.join(repr(s) for s in schemas)}) AND table_name NOT IN ('_batch_loads', '_batch_load_history') "
            "ORDER BY 1").fetchall()]
        return {n: _digest(con, n) for n in names}


def feature_files_state(inst: Instance) -> dict:
    """Rows and content hash of each published feature table (a dataset folder, or a file; read through the features
    link)."""
    folder = inst.data / "features"
    if not folder.exists():
        return {}
    out = {}
    with duckdb.connect() as con:
        for path in sorted(folder.iterdir()):
            out[path.name] = _digest(con, f"read_parquet('{path}')")
    return out


def online_state(inst: Instance) -> dict:
    """Rows and a hash of every stored value per online table (the wide store: one row per entity key; its
    catalog without the time each view was last applied, which every apply rewrites)."""
    db = inst.data / "feast" / "online_store.db"
    if not db.exists():
        return {}
    con = _read_only(db)
    try:
        out = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if r[1] != "updated_at"]
            h = hashlib.sha256()
            n = 0
            listed = ", ".join(f'"{c}"' for c in columns)
            for row in con.execute(f'SELECT {listed} FROM "{table}" ORDER BY {listed}'):
                h.update(repr(row).encode())
                n += 1
            out[table] = (n, h.hexdigest()[:16])
        return out
    finally:
        con.close()


def registry_state(inst: Instance) -> dict:
    """Per spec: the champion's sha256 and the set of registered artefacts (by sha256)."""
    db = inst.data / "registry.db"
    if not db.exists():
        return {}
    con = _read_only(db)
    try:
        versions = dict(((s, v), sha) for s, v, sha in con.execute("SELECT spec, version, sha256 FROM model_versions"))
        out: dict = {}
        for spec, version in con.execute("SELECT spec, version FROM aliases WHERE alias = 'champion'"):
            out[f"{spec}:champion"] = versions[(spec, version)]
        for (spec, _), sha in versions.items():
            out.setdefault(f"{spec}:artefacts", set()).add(sha)
        return {k: sorted(v) if isinstance(v, set) else v for k, v in out.items()}
    finally:
        con.close()


def _read_only(db: Path) -> sqlite3.Connection:
    """Read a SQLite file without writing beside it: ``immutable`` (no -shm/-wal created) unless a write-ahead log
    holds transactions to read (after a SIGKILL)."""
    if Path(f"{db}-wal").exists():
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    return sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)


def visible(inst: Instance) -> dict:
    """What the platform's readers see: every step that opens the warehouse first completes a feature publication
    a crash interrupted between the warehouse and the files (as ``WarehouseResource.connect`` does); an empty
    relation reads as an absent one."""
    from batch_platform.lib import feature_generations

    db = inst.data / "warehouse.duckdb"
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            feature_generations.reconcile(con, inst.data / "features", inst.data / "feature_generations")
    warehouse = {k: v for k, v in warehouse_state(inst).items() if v[0] > 0}
    return {"warehouse": warehouse, "features": feature_files_state(inst),
            "online": online_state(inst), "registry": registry_state(inst)}


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links by their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def runs_in_progress(inst: Instance) -> list[str]:
    db = inst.home / "history" / "runs.db"
    con = _read_only(db)
    try:
        return [r[0] for r in con.execute("SELECT run_id FROM runs WHERE status IN ('STARTED', 'STARTING', "
                                          "'CANCELING')")]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------------- the report

@dataclass
class Figures:
    bad_input_kinds: dict = field(default_factory=dict)  # kind -> named error
    crash_points: dict = field(default_factory=dict)  # point -> {"stage", "killed", "visible", "converged", "s"}
    concurrent_trials: list = field(default_factory=list)

    def write(self) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps({
            "bad_input_kinds_rejected_named": len(self.bad_input_kinds), "bad_input": self.bad_input_kinds,
            "sigkill_points_survived": sum(1 for p in self.crash_points.values() if p.get("converged")),
            "sigkill_points": self.crash_points,
            "concurrent_trials_without_lock_errors": sum(1 for t in self.concurrent_trials if t["ok"]),
            "concurrent_trials": self.concurrent_trials,
        }, indent=2, default=str))


FIGURES = Figures()
