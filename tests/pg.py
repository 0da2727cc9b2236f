"""A throwaway PostgreSQL 15 server for tests and benchmarks (no fixture library needed).

``PostgresServer`` runs ``initdb`` in a fresh temporary directory, starts the
server with ``pg_ctl`` on a free port of 127.0.0.1 (no other interface, a
Unix socket only inside that directory), and removes everything on ``stop()``.
PostgreSQL refuses to run as root, so as root the binaries run as the
``postgres`` user (``runuser``) on a directory that user owns.

Every login needs a password (scram-sha-256), so a wrong password is refused
the way a real server refuses it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pg-super-" + "x7Qe"


def bindir() -> Path:
    """Folder of initdb/pg_ctl: ``pg_config --bindir``."""
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``url()`` builds psycopg URLs for it."""

    def __init__(self, fsync: bool = False, max_connections: int = 300):
        self.fsync = fsync
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self.as_postgres = os.geteuid() == 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="evalcluster-pg-"))
        pwfile = self.root / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._pg(
            "initdb",
            "-D",
            str(self.root / "data"),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        for _attempt in range(5):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            if self._try_start():
                return self
        raise RuntimeError(f"PostgreSQL did not start; log: {self._log_tail()}")

    def _try_start(self) -> bool:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
            f" -c max_connections={self.max_connections} -c fsync={'on' if self.fsync else 'off'}"
            f" -c synchronous_commit={'on' if self.fsync else 'off'} -c full_page_writes=off"
        )
        proc = self._pg(
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-t", "60",
            "-o", opts, "start", check=False,
        )  # fmt: skip
        return proc.returncode == 0

    def stop(self) -> None:
        """Stop the server (immediate mode: nothing in it is worth a checkpoint) and remove its files."""
        if self.root is None:
            return
        self._pg("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def pause(self) -> None:
        """Stop the server (fast mode: sessions are ended), keeping its files and port for ``resume``."""
        self._pg("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a paused server again, on the same port."""
        if not self._try_start():
            raise RuntimeError(f"PostgreSQL did not restart; log: {self._log_tail()}")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir() / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} failed: {proc.stderr[-2000:]}")
        return proc

    def _log_tail(self) -> str:
        log = self.root / "log" if self.root else None
        return log.read_text()[-2000:] if log and log.is_file() else "(no log)"

    # ------------------------------------------------------------------ roles and databases

    def url(
        self, database: str = "postgres", user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD
    ) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg", user, password, "127.0.0.1", self.port, database
        ).render_as_string(hide_password=False)

    def admin(self, *statements: str) -> None:
        """Run statements as the superuser, each in autocommit (CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=SUPERUSER_PASSWORD,
            dbname="postgres", autocommit=True, connect_timeout=10,
        ) as con:  # fmt: skip
            for sql in statements:
                con.execute(sql)

    def create_role(self, name: str, password: str) -> None:
        self.admin(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")

    def create_database(self, owner: str = SUPERUSER, name: str | None = None) -> str:
        """A new empty database owned by ``owner``; returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_ready(self, deadline_s: float = 30) -> None:
        """Block until a login succeeds (pg_ctl -w normally guarantees it already)."""
        import psycopg

        end = time.monotonic() + deadline_s
        while True:
            try:
                self.admin("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
