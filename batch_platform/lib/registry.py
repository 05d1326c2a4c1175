"""The model registry: versions and aliases per model spec, in its own transactional SQLite store.

A spec (``flight_delay``, ...) has versions 1, 2, ... (one per registered LightGBM text artefact, with its sha256,
dataset fingerprint, metrics and gate report) and aliases (``champion``, ``challenger``, ...) pointing at one
version each. Every alias move is a row in ``alias_log``, written in the *same* transaction as the move, so the
alias table and its history can never disagree, whatever process dies when. The log is append-only (SQLite
triggers refuse UPDATE and DELETE) and the alias can be put back to any version that held it by :meth:`rollback`.

Rules:

* ``champion`` (the alias scoring resolves) moves only through :meth:`ModelRegistry.promote`, which requires a
  gate report with ``passed is True`` naming the candidate version, or :meth:`ModelRegistry.rollback`, which
  requires the caller's ``verify`` (artefact sha256 + smoke score) to pass and the target to have held the alias
  before. Other aliases (``challenger``, ...) are set freely with :meth:`ModelRegistry.set_alias`.
* Versions are immutable once registered, except that a gate report may be attached later.

Storage: SQLite in WAL mode with ``synchronous=FULL``; every write is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled
back on any exception), so concurrent processes serialize on the write lock (``busy_timeout``, 30 s by default)
and readers see committed snapshots. Each call opens and closes its own connection: a ``ModelRegistry`` is cheap
and safe to share between threads and across ``fork``. WAL needs a local filesystem (not NFS). This is not the
DuckDB warehouse; it has no Dagster imports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_platform.lib import faults

SCHEMA_VERSION = 2  # stored in PRAGMA user_version; v2 added alias_log.evidence
DEFAULT_BUSY_TIMEOUT_S = 30.0
CHAMPION = "champion"
CHALLENGER = "challenger"
CANARY = "canary"
GATED_ALIASES = frozenset({CHAMPION})  # aliases that only promote() / rollback() may move
ACTIONS = ("promote", "rollback", "set", "clear")

# Names of the points where the test-only ``_fault`` hook is called.
FAULT_AFTER_ALIAS_UPDATE = "after_alias_update"  # alias row written, log row not yet (inside the transaction)
FAULT_AFTER_LOG_INSERT = "after_log_insert"  # both written, not yet committed
FAULT_AFTER_COMMIT = "after_commit"  # committed
FaultHook = Callable[[str], None]


def _crash_points(name: str) -> None:
    """The default hook: the fault suite's crash points ``registry.<name>`` (inert unless it names one)."""
    faults.point(f"registry.{name}")

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")  # same rule as model spec names
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------------- errors


class RegistryError(Exception):
    """Base class for everything the registry refuses or cannot do."""


class RegistrySchemaError(RegistryError):
    """The file is not a registry this code can use (foreign SQLite file, newer schema version)."""


class UnknownModelVersion(RegistryError, LookupError):
    """No such (spec, version)."""


class UnknownAlias(RegistryError, LookupError):
    """No such alias on a spec (e.g. clearing an alias that was never set)."""


class PromotionRefused(RegistryError):
    """The gate report does not allow this promotion, or the alias is gated and cannot be set directly."""


class StaleGateReport(PromotionRefused):
    """The gate report compared the candidate with another champion than the current one: gate it again."""


class RollbackRefused(RegistryError):
    """Rollback not allowed: unknown or current target, never held the alias, or ``verify`` raised (the cause)."""


# --------------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class ModelVersion:
    spec: str
    version: int
    sha256: str  # hex sha256 of the artefact's bytes (LightGBM text format)
    artifact_path: Path  # stored as given at registration
    fingerprint: dict[str, Any]  # training data / code fingerprint
    metrics: dict[str, Any]
    gate_report: dict[str, Any] | None
    created_at: str  # ISO 8601, UTC
    run_id: str  # the run that registered it

    @property
    def ref(self) -> str:
        return f"{self.spec}@v{self.version}"


@dataclass(frozen=True)
class AliasEvent:
    id: int  # position in the append-only alias_log
    spec: str
    alias: str
    from_version: int | None  # None: the alias did not exist
    to_version: int | None  # None: the alias was cleared
    action: str  # promote | rollback | set | clear
    reason: str
    gate_report: dict[str, Any] | None
    run_id: str
    at: str  # ISO 8601, UTC
    evidence: dict[str, Any] | None = None  # what the move was decided on (shadow comparison, canary, rollback)


# --------------------------------------------------------------------------------------------------- schema

_SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE model_versions (
        spec          TEXT    NOT NULL,
        version       INTEGER NOT NULL CHECK (version >= 1),
        sha256        TEXT    NOT NULL CHECK (length(sha256) = 64),
        artifact_path TEXT    NOT NULL,
        fingerprint   TEXT    NOT NULL CHECK (json_valid(fingerprint)),
        metrics       TEXT    NOT NULL CHECK (json_valid(metrics)),
        gate_report   TEXT             CHECK (gate_report IS NULL OR json_valid(gate_report)),
        created_at    TEXT    NOT NULL,
        run_id        TEXT    NOT NULL,
        PRIMARY KEY (spec, version)
    )
    """,
    """
    CREATE TABLE aliases (
        spec       TEXT    NOT NULL,
        alias      TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        updated_at TEXT    NOT NULL,
        run_id     TEXT    NOT NULL,
        PRIMARY KEY (spec, alias),
        FOREIGN KEY (spec, version) REFERENCES model_versions (spec, version)
    )
    """,
    """
    CREATE TABLE alias_log (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        spec         TEXT    NOT NULL,
        alias        TEXT    NOT NULL,
        from_version INTEGER,
        to_version   INTEGER,
        action       TEXT    NOT NULL CHECK (action IN ('promote', 'rollback', 'set', 'clear')),
        reason       TEXT    NOT NULL,
        gate_report  TEXT             CHECK (gate_report IS NULL OR json_valid(gate_report)),
        run_id       TEXT    NOT NULL,
        at           TEXT    NOT NULL,
        evidence     TEXT             CHECK (evidence IS NULL OR json_valid(evidence)),
        CHECK ((action = 'clear') = (to_version IS NULL)),
        FOREIGN KEY (spec, from_version) REFERENCES model_versions (spec, version),
        FOREIGN KEY (spec, to_version) REFERENCES model_versions (spec, version)
    )
    """,
    "CREATE INDEX alias_log_by_alias ON alias_log (spec, alias, id)",
    """
    CREATE TRIGGER alias_log_no_update BEFORE UPDATE ON alias_log
    BEGIN SELECT RAISE(ABORT, 'alias_log is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER alias_log_no_delete BEFORE DELETE ON alias_log
    BEGIN SELECT RAISE(ABORT, 'alias_log is append-only: DELETE refused'); END
    """,
    """
    CREATE TRIGGER model_versions_immutable
    BEFORE UPDATE OF spec, version, sha256, artifact_path, fingerprint, metrics, created_at, run_id
    ON model_versions
    BEGIN SELECT RAISE(ABORT, 'model_versions are immutable (only gate_report may be attached)'); END
    """,
    """
    CREATE TRIGGER model_versions_no_delete BEFORE DELETE ON model_versions
    BEGIN SELECT RAISE(ABORT, 'model_versions cannot be deleted'); END
    """,
)
_REQUIRED_TRIGGERS = ("alias_log_no_update", "alias_log_no_delete", "model_versions_immutable",
                      "model_versions_no_delete")

_VERSION_COLUMNS = "spec, version, sha256, artifact_path, fingerprint, metrics, gate_report, created_at, run_id"
_LOG_COLUMNS = "id, spec, alias, from_version, to_version, action, reason, gate_report, run_id, at, evidence"
_MIGRATIONS = {  # from schema version N to N + 1, run in the opening transaction
    1: ("ALTER TABLE alias_log ADD COLUMN evidence TEXT CHECK (evidence IS NULL OR json_valid(evidence))",),
}


# --------------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _check_ident(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise RegistryError(f"{kind} must be lower_snake_case, got {value!r}")
    return value


def _check_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"version must be an integer >= 1, got {value!r}")
    return value


def _check_text(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{kind} must be a non-empty string, got {value!r}")
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(kind: str, obj: object) -> str:
    if not isinstance(obj, dict):
        raise RegistryError(f"{kind} must be a dict, got {type(obj).__name__}")
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{kind} is not strict JSON (NaN/Infinity are refused, use null): {exc}") from exc


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _gate_refusal(spec: str, version: int | None, gate_report: object) -> str | None:
    """Why ``gate_report`` does not allow promoting ``spec`` v``version`` (None: it does)."""
    if not isinstance(gate_report, dict):
        return f"gate report must be a dict, got {type(gate_report).__name__}"
    if gate_report.get("passed") is not True:
        return f"gate did not pass (passed={gate_report.get('passed')!r})"
    candidate = gate_report.get("candidate_version")
    if isinstance(candidate, bool) or candidate != version:
        return f"gate report is for candidate_version={candidate!r}, not v{version}"
    if "spec" in gate_report and gate_report["spec"] != spec:
        return f"gate report is for spec {gate_report['spec']!r}, not {spec!r}"
    return None


def _version_from_row(row: tuple) -> ModelVersion:
    spec, version, sha, path, fingerprint, metrics, gate_report, created_at, run_id = row
    return ModelVersion(
        spec=spec, version=version, sha256=sha, artifact_path=Path(path), fingerprint=json.loads(fingerprint),
        metrics=json.loads(metrics), gate_report=_loads(gate_report), created_at=created_at, run_id=run_id,
    )


def _event_from_row(row: tuple) -> AliasEvent:
    id_, spec, alias, from_v, to_v, action, reason, gate_report, run_id, at, evidence = row
    return AliasEvent(
        id=id_, spec=spec, alias=alias, from_version=from_v, to_version=to_v, action=action, reason=reason,
        gate_report=_loads(gate_report), run_id=run_id, at=at, evidence=_loads(evidence),
    )


# --------------------------------------------------------------------------------------------------- registry


class ModelRegistry:
    """Versions and aliases of every model spec, in one SQLite file (created with its schema if missing)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._init_schema()

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.path)!r})"

    # ----------------------------------------------------------------------------------- connections

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, every transaction below is explicit.
        con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            con.close()
            raise
        return con

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one committed snapshot."""
        con = self._connect()
        try:
            con.execute("BEGIN DEFERRED")
            try:
                yield con
            finally:
                if con.in_transaction:
                    con.execute("COMMIT")
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` (takes the write lock up front, waits up to busy_timeout) ... ``COMMIT``;
        ``ROLLBACK`` on any exception."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _init_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = self._connect()
        except sqlite3.DatabaseError as exc:
            raise RegistrySchemaError(f"{self.path}: cannot open as SQLite: {exc}") from exc
        try:
            self._enable_wal(con)
            con.execute("BEGIN IMMEDIATE")
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                    if tables:
                        raise RegistrySchemaError(f"{self.path} is an SQLite file but not a model registry")
                    for statement in _SCHEMA:
                        con.execute(statement)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version < SCHEMA_VERSION:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[step]:
                            con.execute(statement)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise RegistrySchemaError(
                        f"{self.path} has registry schema v{version}; this code knows up to v{SCHEMA_VERSION}"
                    )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise RegistrySchemaError(f"{self.path}: {exc}") from exc
        finally:
            con.close()

    def _enable_wal(self, con: sqlite3.Connection) -> None:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        # Switching needs an exclusive lock; several processes creating the file at once may see "locked".
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
        if mode.lower() != "wal":
            raise RegistrySchemaError(f"{self.path}: could not switch to WAL journal mode (got {mode!r})")

    # ----------------------------------------------------------------------------------- queries (inside a txn)

    @staticmethod
    def _fetch_version(con: sqlite3.Connection, spec: str, version: int) -> ModelVersion | None:
        row = con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE spec = ? AND version = ?", (spec, version)
        ).fetchone()
        return None if row is None else _version_from_row(row)

    def _require_version(self, con: sqlite3.Connection, spec: str, version: int) -> ModelVersion:
        found = self._fetch_version(con, spec, version)
        if found is None:
            raise UnknownModelVersion(f"{spec} has no version {version} in {self.path}")
        return found

    @staticmethod
    def _alias_target(con: sqlite3.Connection, spec: str, alias: str) -> int | None:
        row = con.execute("SELECT version FROM aliases WHERE spec = ? AND alias = ?", (spec, alias)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _last_event(con: sqlite3.Connection, spec: str, alias: str) -> AliasEvent | None:
        row = con.execute(
            f"SELECT {_LOG_COLUMNS} FROM alias_log WHERE spec = ? AND alias = ? ORDER BY id DESC LIMIT 1",
            (spec, alias),
        ).fetchone()
        return None if row is None else _event_from_row(row)

    @staticmethod
    def _has_held(con: sqlite3.Connection, spec: str, alias: str, version: int) -> bool:
        return con.execute(
            "SELECT 1 FROM alias_log WHERE spec = ? AND alias = ? AND to_version = ? LIMIT 1", (spec, alias, version)
        ).fetchone() is not None

    @staticmethod
    def _move(
        con: sqlite3.Connection, *, spec: str, alias: str, current: int | None, new: int | None, action: str,
        reason: str, gate_json: str | None, run_id: str, fault: FaultHook | None, evidence_json: str | None = None,
    ) -> AliasEvent:
        """Move the alias and append its log entry; the caller's transaction makes both one atomic step."""
        at = _now()
        if new is None:
            con.execute("DELETE FROM aliases WHERE spec = ? AND alias = ?", (spec, alias))
        else:
            con.execute(
                "INSERT INTO aliases (spec, alias, version, updated_at, run_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (spec, alias) DO UPDATE SET "
                "version = excluded.version, updated_at = excluded.updated_at, run_id = excluded.run_id",
                (spec, alias, new, at, run_id),
            )
        if fault is not None:
            fault(FAULT_AFTER_ALIAS_UPDATE)
        event_id = con.execute(
            "INSERT INTO alias_log (spec, alias, from_version, to_version, action, reason, gate_report, run_id, at, "
            "evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (spec, alias, current, new, action, reason, gate_json, run_id, at, evidence_json),
        ).fetchone()[0]
        if fault is not None:
            fault(FAULT_AFTER_LOG_INSERT)
        return AliasEvent(
            id=event_id, spec=spec, alias=alias, from_version=current, to_version=new, action=action,
            reason=reason, gate_report=_loads(gate_json), run_id=run_id, at=at, evidence=_loads(evidence_json),
        )

    # ----------------------------------------------------------------------------------- versions

    def register_version(
        self,
        spec: str,
        *,
        artifact_path: Path | str,
        sha256: str,
        fingerprint: dict,
        metrics: dict,
        run_id: str,
        gate_report: dict | None = None,
    ) -> ModelVersion:
        """Record a new version of ``spec``; its number (max + 1, from 1) is allocated inside the insert
        transaction, so concurrent registrations from any number of processes never collide or leave gaps.

        The registry does not read the artefact: callers store it with ``artifacts.save_model_text`` and pass
        the path and sha256 it returned; loaders verify with ``artifacts.read_verified``.
        """
        _check_ident("spec", spec)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise RegistryError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        path_text = _check_text("artifact_path", str(artifact_path) if isinstance(artifact_path, Path)
                                else artifact_path)
        _check_text("run_id", run_id)
        fingerprint_json = _dumps("fingerprint", fingerprint)
        metrics_json = _dumps("metrics", metrics)
        gate_json = None if gate_report is None else _dumps("gate_report", gate_report)
        created_at = _now()
        with self._write() as con:
            version = con.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE spec = ?", (spec,)
            ).fetchone()[0]
            con.execute(
                f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (spec, version, sha256, path_text, fingerprint_json, metrics_json, gate_json, created_at, run_id),
            )
        return ModelVersion(
            spec=spec, version=version, sha256=sha256, artifact_path=Path(path_text),
            fingerprint=json.loads(fingerprint_json), metrics=json.loads(metrics_json),
            gate_report=_loads(gate_json), created_at=created_at, run_id=run_id,
        )

    def attach_gate_report(self, spec: str, version: int, gate_report: dict) -> ModelVersion:
        """Store (or replace) the gate report of a version. A report naming another ``candidate_version`` or
        ``spec`` is refused. Promotion log entries keep their own copy of the report they were granted on."""
        _check_ident("spec", spec)
        _check_version(version)
        gate_json = _dumps("gate_report", gate_report)
        if "candidate_version" in gate_report and (
            isinstance(gate_report["candidate_version"], bool) or gate_report["candidate_version"] != version
        ):
            raise RegistryError(f"gate report names candidate_version={gate_report['candidate_version']!r}, "
                                f"not {spec} v{version}")
        if "spec" in gate_report and gate_report["spec"] != spec:
            raise RegistryError(f"gate report names spec {gate_report['spec']!r}, not {spec!r}")
        with self._write() as con:
            self._require_version(con, spec, version)
            con.execute(
                "UPDATE model_versions SET gate_report = ? WHERE spec = ? AND version = ?", (gate_json, spec, version)
            )
            return self._require_version(con, spec, version)

    def get_version(self, spec: str, version: int) -> ModelVersion:
        with self._read() as con:
            return self._require_version(con, spec, version)

    def list_versions(self, spec: str | None = None) -> list[ModelVersion]:
        """All versions (of one spec, or of every spec), ordered by spec then version."""
        query = f"SELECT {_VERSION_COLUMNS} FROM model_versions"
        params: tuple = ()
        if spec is not None:
            query += " WHERE spec = ?"
            params = (spec,)
        with self._read() as con:
            rows = con.execute(query + " ORDER BY spec, version", params).fetchall()
        return [_version_from_row(r) for r in rows]

    def specs(self) -> list[str]:
        with self._read() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT spec FROM model_versions ORDER BY spec")]

    # ----------------------------------------------------------------------------------- aliases

    def get_alias(self, spec: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at (``None`` if the alias is not set)."""
        with self._read() as con:
            row = con.execute(
                f"SELECT {', '.join('v.' + c.strip() for c in _VERSION_COLUMNS.split(','))} "
                "FROM aliases a JOIN model_versions v ON v.spec = a.spec AND v.version = a.version "
                "WHERE a.spec = ? AND a.alias = ?",
                (spec, alias),
            ).fetchone()
        return None if row is None else _version_from_row(row)

    def aliases(self, spec: str) -> dict[str, int]:
        with self._read() as con:
            rows = con.execute("SELECT alias, version FROM aliases WHERE spec = ? ORDER BY alias", (spec,))
            return {alias: version for alias, version in rows}

    def promote(
        self,
        spec: str,
        version: int,
        *,
        gate_report: dict,
        run_id: str,
        alias: str = CHAMPION,
        reason: str = "gate passed",
        evidence: dict | None = None,
        _fault: FaultHook | None = None,
    ) -> AliasEvent:
        """Point ``alias`` at ``version``, only on a gate report with ``passed is True`` and
        ``candidate_version == version`` (and, if it has a ``spec`` key, this spec); else :class:`PromotionRefused`.
        The report must name the version it was judged against (``champion_version``, ``None`` for a first model)
        and that must be where ``alias`` points now, checked inside the write transaction: a report judged against
        an older champion is :class:`StaleGateReport` (gate again). ``evidence`` (shadow comparison, canary
        window, ...) is logged with the move.

        The alias move and its log entry (with the gate report and run id) are one transaction. Promoting the
        version the alias already points at changes nothing and returns the log entry that put it there (so a
        retried promotion step is harmless).

        ``_fault`` is a test-only hook for crash tests, called with ``"after_alias_update"`` and
        ``"after_log_insert"`` inside the transaction and ``"after_commit"`` after it. Never pass it in
        production code.
        """
        _check_ident("spec", spec)
        _check_ident("alias", alias)
        _check_version(version)
        _check_text("run_id", run_id)
        _check_text("reason", reason)
        refusal = _gate_refusal(spec, version, gate_report)
        if refusal is not None:
            raise PromotionRefused(f"refusing to promote {spec} v{version} to {alias!r}: {refusal}")
        gate_json = _dumps("gate_report", gate_report)
        evidence_json = None if evidence is None else _dumps("evidence", evidence)
        with self._write() as con:
            self._require_version(con, spec, version)
            current = self._alias_target(con, spec, alias)
            if current == version and (last := self._last_event(con, spec, alias)) is not None:
                return last
            if "champion_version" not in gate_report:
                raise StaleGateReport(f"refusing to promote {spec} v{version} to {alias!r}: the gate report does "
                                      "not name the champion it was judged against (champion_version)")
            if gate_report["champion_version"] != current:
                judged = gate_report["champion_version"]
                raise StaleGateReport(
                    f"refusing to promote {spec} v{version} to {alias!r}: its gate report was judged against "
                    f"{'no champion' if judged is None else f'v{judged}'}, but {alias!r} is now "
                    f"{'unset' if current is None else f'v{current}'}: gate v{version} again")
            event = self._move(
                con, spec=spec, alias=alias, current=current, new=version, action="promote", reason=reason,
                gate_json=gate_json, run_id=run_id, fault=_fault or _crash_points, evidence_json=evidence_json,
            )
        (_fault or _crash_points)(FAULT_AFTER_COMMIT)
        return event

    def set_alias(
        self,
        spec: str,
        alias: str,
        version: int | None,
        *,
        reason: str,
        run_id: str,
        action: str = "set",
        evidence: dict | None = None,
        _fault: FaultHook | None = None,
    ) -> AliasEvent:
        """Point a non-gated alias (``challenger``, ...) at ``version``, or clear it with ``None`` (logged as
        ``clear``). ``champion`` can be cleared here but only set through :meth:`promote` or :meth:`rollback`.

        Setting the alias to where it already is returns the latest log entry and writes nothing; clearing an
        alias that was never set raises :class:`UnknownAlias`. ``_fault``: test-only, see :meth:`promote`.
        """
        _check_ident("spec", spec)
        _check_ident("alias", alias)
        _check_text("run_id", run_id)
        _check_text("reason", reason)
        if action not in ("set", "clear"):
            raise RegistryError(f"set_alias records 'set' or 'clear', not {action!r}; use promote()/rollback()")
        if version is None:
            action = "clear"
        else:
            _check_version(version)
            if action == "clear":
                raise RegistryError("action 'clear' needs version=None")
            if alias in GATED_ALIASES:
                raise PromotionRefused(
                    f"alias {alias!r} of {spec} moves only through promote() (gate) or rollback(), not set_alias()"
                )
        with self._write() as con:
            if version is not None:
                self._require_version(con, spec, version)
            current = self._alias_target(con, spec, alias)
            if current == version:
                last = self._last_event(con, spec, alias)
                if last is not None:
                    return last
                if version is None:
                    raise UnknownAlias(f"{spec} has no alias {alias!r} to clear")
            event = self._move(
                con, spec=spec, alias=alias, current=current, new=version, action=action, reason=reason,
                gate_json=None, run_id=run_id, fault=_fault or _crash_points,
                evidence_json=None if evidence is None else _dumps("evidence", evidence),
            )
        (_fault or _crash_points)(FAULT_AFTER_COMMIT)
        return event

    def rollback(
        self,
        spec: str,
        to_version: int,
        *,
        verify: Callable[[ModelVersion], None],
        reason: str,
        run_id: str,
        alias: str = CHAMPION,
        evidence: dict | None = None,
        _fault: FaultHook | None = None,
    ) -> AliasEvent:
        """Put ``alias`` back to ``to_version``, a version that held it before.

        ``verify(version)`` runs first, outside any transaction (the caller checks the artefact's sha256 and
        runs a smoke score); any exception from it becomes :class:`RollbackRefused` (with the exception as its
        cause) and nothing changes. Also refused: an unknown version, the alias's current target, a version
        that never held this alias, and an alias that moved while ``verify`` ran. The move and its log entry
        (action ``rollback``) are one transaction. ``_fault``: test-only, see :meth:`promote`.
        """
        _check_ident("spec", spec)
        _check_ident("alias", alias)
        _check_version(to_version)
        _check_text("run_id", run_id)
        _check_text("reason", reason)
        if not callable(verify):
            raise RegistryError("rollback needs a verify callable (artefact checksum + smoke score)")
        with self._read() as con:
            target = self._fetch_version(con, spec, to_version)
            current = self._alias_target(con, spec, alias)
            held = self._has_held(con, spec, alias, to_version)
        where = f"{spec} {alias!r} to v{to_version}"
        if target is None:
            raise RollbackRefused(f"cannot roll back {where}: unknown version") from UnknownModelVersion(
                f"{spec} has no version {to_version}"
            )
        if current == to_version:
            raise RollbackRefused(f"cannot roll back {where}: it is already the current target")
        if not held:
            raise RollbackRefused(f"cannot roll back {where}: v{to_version} never held {alias!r} (promote it)")
        try:
            verify(target)
        except Exception as exc:
            raise RollbackRefused(f"cannot roll back {where}: verification failed: {exc!r}") from exc
        with self._write() as con:
            now_current = self._alias_target(con, spec, alias)
            if now_current != current:
                raise RollbackRefused(
                    f"cannot roll back {where}: alias moved from v{current} to v{now_current} during verification"
                )
            event = self._move(
                con, spec=spec, alias=alias, current=current, new=to_version, action="rollback", reason=reason,
                gate_json=None, run_id=run_id, fault=_fault or _crash_points,
                evidence_json=None if evidence is None else _dumps("evidence", evidence),
            )
        (_fault or _crash_points)(FAULT_AFTER_COMMIT)
        return event

    def alias_history(self, spec: str, alias: str | None = None) -> list[AliasEvent]:
        """Log entries of one spec (one alias or all), oldest first."""
        query = f"SELECT {_LOG_COLUMNS} FROM alias_log WHERE spec = ?"
        params: tuple = (spec,)
        if alias is not None:
            query += " AND alias = ?"
            params = (spec, alias)
        with self._read() as con:
            rows = con.execute(query + " ORDER BY id", params).fetchall()
        return [_event_from_row(r) for r in rows]

    # ----------------------------------------------------------------------------------- invariants

    def consistency_problems(self, spec: str | None = None) -> list[str]:
        """Broken invariants, as sentences (empty list: consistent). Checked on one snapshot:

        * SQLite ``quick_check`` and ``foreign_key_check`` pass; schema version and append-only triggers present;
        * per (spec, alias), log entries chain: the first starts from nothing, each ``from_version`` equals the
          previous entry's ``to_version``;
        * every alias row equals the ``to_version`` of the latest log entry for that (spec, alias), and an alias
          whose latest entry is not a ``clear`` has a row;
        * every ``promote`` entry carries a passed gate report naming its version.
        """
        problems: list[str] = []
        with self._read() as con:
            checks = [r[0] for r in con.execute("PRAGMA quick_check")]
            if checks != ["ok"]:
                problems += [f"sqlite quick_check: {c}" for c in checks]
            for table, rowid, parent, _ in con.execute("PRAGMA foreign_key_check"):
                problems.append(f"{table} row {rowid} references a missing {parent} row")
            schema_version = con.execute("PRAGMA user_version").fetchone()[0]
            if schema_version != SCHEMA_VERSION:
                problems.append(f"schema version is {schema_version}, expected {SCHEMA_VERSION}")
            triggers = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            problems += [f"trigger {t} is missing" for t in _REQUIRED_TRIGGERS if t not in triggers]

            where, params = ("WHERE spec = ?", (spec,)) if spec is not None else ("", ())
            alias_rows = {
                (s, a): v for s, a, v in con.execute(f"SELECT spec, alias, version FROM aliases {where}", params)
            }
            log = [
                _event_from_row(r)
                for r in con.execute(f"SELECT {_LOG_COLUMNS} FROM alias_log {where} ORDER BY id", params)
            ]

        last: dict[tuple[str, str], AliasEvent] = {}
        for event in log:
            key = (event.spec, event.alias)
            previous = last.get(key)
            expected_from = previous.to_version if previous is not None else None
            if event.from_version != expected_from:
                after = f"entry #{previous.id}" if previous is not None else "nothing (first entry)"
                problems.append(
                    f"{event.spec} {event.alias!r}: log entry #{event.id} moves from v{event.from_version} but "
                    f"follows {after} which left it at v{expected_from}"
                )
            if event.action == "promote":
                refusal = _gate_refusal(event.spec, event.to_version, event.gate_report)
                if refusal is not None:
                    problems.append(f"{event.spec} {event.alias!r}: promote entry #{event.id}: {refusal}")
            last[key] = event
        for key in sorted(set(alias_rows) | set(last)):
            row_version = alias_rows.get(key)
            latest = last.get(key)
            name = f"{key[0]} {key[1]!r}"
            if latest is None:
                problems.append(f"{name} points at v{row_version} but has no log entry")
            elif latest.to_version != row_version:
                problems.append(
                    f"{name} points at v{row_version} but its latest log entry #{latest.id} says "
                    f"v{latest.to_version}"
                )
        return problems
