"""Real PostgreSQL and Redis servers for tests: started on loopback, on free ports, in temporary folders, and
stopped (then their folders removed) when the ``with`` block ends, whatever happened inside it.

The binaries come from Debian's ``postgresql`` and ``redis-server`` packages (``make system-deps`` installs them).
A missing binary fails the test with what to install: CI installs them, so a skip would hide a broken setup.

PostgreSQL refuses to run as root: under root the cluster is created and run as the ``postgres`` user (Debian's
package creates it), else ``nobody``, with its data folder in a fresh directory of the system temp dir owned by
that user (pytest's own temp dirs are private to root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables ``dagster_home_postgres/dagster.yaml`` reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}

    def connect(self, db: str | None = None):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db or self.db, connect_timeout=5)


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    password: str
    db: int

    @property
    def connection_string(self) -> str:
        """Feast's format, as ``BATCH_PLATFORM_REDIS`` takes it."""
        return f"{self.host}:{self.port},db={self.db},password={self.password}"

    def client(self):
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, db=self.db,
                           socket_connect_timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str, package: str, extra_dirs: list[str] = ()) -> str:
    candidates = [os.path.join(folder, name) for folder in extra_dirs]
    found = next((c for c in candidates if os.access(c, os.X_OK)), None) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (PATH or {', '.join(extra_dirs) or '-'}): install the Debian package "
                    f"{package!r} (`make system-deps` does, as `make test` runs it)", pytrace=False)
    return found


def _postgres_bin_dirs() -> list[str]:
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Signal the server, wait for it to exit, kill it if it does not."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _wait_until(ready, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} while starting:\n{_tail(log)}", pytrace=False)
        try:
            ready()
            return
        except Exception as exc:  # not accepting connections yet
            last = exc
            time.sleep(0.2)
    pytest.fail(f"{what} not ready after {START_TIMEOUT_S:.0f} s ({last}):\n{_tail(log)}", pytrace=False)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextlib.contextmanager
def postgres_server(db: str = "dagster", user: str = "platform", password: str = "platform-secret") -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (TCP only, password authentication) with database ``db``."""
    dirs = _postgres_bin_dirs()
    initdb = _binary("initdb", "postgresql", dirs)
    postgres = _binary("postgres", "postgresql", dirs)
    run_as: dict = {}
    if os.geteuid() == 0:
        account = next((a for a in ("postgres", "nobody") if _has_user(a)), None)
        if account is None:
            pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL",
                        pytrace=False)
        entry = pwd.getpwnam(account)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="batch-platform-postgres-"))
    proc = None
    try:
        data, sockets, log = base / "data", base / "sockets", base / "postgres.log"
        sockets.mkdir()
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            for path in (base, sockets, pwfile):
                os.chown(path, run_as["user"], run_as["group"])
        init = subprocess.run(
            [initdb, "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
             "--no-sync"], capture_output=True, text=True, cwd=base, **run_as)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", pytrace=False)
        port = free_port()
        with open(log, "w") as out:
            if run_as:
                os.chown(log, run_as["user"], run_as["group"])
            proc = subprocess.Popen(
                [postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(sockets),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=out, stderr=subprocess.STDOUT, cwd=base, **run_as)
        server = Postgres("127.0.0.1", port, user, password, db)

        def ready():
            server.connect("postgres").close()

        _wait_until(ready, proc, f"postgres on 127.0.0.1:{port}", log)
        con = server.connect("postgres")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db}"')
        finally:
            con.close()
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def redis_server(workdir: Path, password: str = "redis-secret", db: int = 1) -> Iterator[Redis]:
    """A redis-server on 127.0.0.1 with a password, without persistence (no RDB snapshots, no AOF)."""
    binary = _binary("redis-server", "redis-server", ["/usr/bin", "/usr/sbin"])
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    port = free_port()
    proc = None
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password, "--save", "",
                 "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--databases", "16"],
                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        server = Redis("127.0.0.1", port, password, db)

        def ready():
            client = server.client()
            try:
                client.ping()
            finally:
                client.close()

        _wait_until(ready, proc, f"redis-server on 127.0.0.1:{port}", log)
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
