"""SQLAlchemy engines for the registry, and driver errors turned into one clear line.

SQLite: WAL mode (readers never block the writer), a 60 s busy timeout, foreign
keys on, and transactions begun by us (``BEGIN``, or ``BEGIN IMMEDIATE`` for
writes, so a write never fails half-way upgrading a read lock, and DDL is
transactional). The file is opened read-write only: an engine never creates one.

PostgreSQL: psycopg 3, a connect timeout, pre-ping (a restarted server costs no
failed command), and each connection names itself ``evalcluster``. A write that finds the
server unreachable is tried again with backoff for ``EVALCLUSTER_DB_RETRY_S`` seconds
(default 30; :func:`with_retries`): a restart or a failover costs a wait, not a lost record.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from cluster.errors import UserError
from cluster.registry.db.url import Target, scrubbed
from cluster.specs.settings import settings

log = logging.getLogger(__name__)
T = TypeVar("T")
BUSY_TIMEOUT_S = 60
RETRY_ENV = "EVALCLUSTER_DB_RETRY_S"  # how long a write waits for an unreachable server (settings.py)
CONNECT_TIMEOUT_S = 10
SQLITE_MAGIC = b"SQLite format 3\x00"
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied"
WRITE = "evalcluster_write"  # execution option: this connection's transactions write


def make_engine(target: Target) -> Engine:
    """An engine for ``target`` (an existing SQLite file, or a PostgreSQL server)."""
    if target.backend == "sqlite":
        return sqlite_engine(target.path)
    return create_engine(
        target.url,
        pool_pre_ping=True,
        pool_size=2,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "evalcluster"},
    )


def sqlite_engine(path: Path, create: bool = False) -> Engine:
    """An engine on the SQLite file ``path``; ``create`` allows a new file (mode rwc)."""
    uri = f"file:{quote(str(path))}?mode={'rwc' if create else 'rw'}"

    def connect() -> sqlite3.Connection:
        con = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        con.execute("PRAGMA foreign_keys = ON")
        return con

    engine = create_engine(f"sqlite:///{path}", creator=connect, poolclass=QueuePool)

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pysqlite's own BEGIN is off (isolation_level=None): emit ours
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")

    return engine


def set_wal(engine: Engine) -> None:
    """Switch the file to WAL mode (persistent; needs no transaction open on this connection)."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            raw.execute("PRAGMA journal_mode = WAL")


def check_sqlite_file(path: Path) -> bool:
    """False when there is no file yet; a UserError when what is there cannot be a registry.

    Checked before SQLite opens it, because SQLite would treat a 0-byte file as an
    empty database and write a new one into it. A truncated or otherwise damaged
    file passes here and is caught by SQLite itself on first read (``translated``).
    """
    if path.is_dir():
        raise UserError(f"registry {path} is a directory, not an SQLite file; move it away")
    if not path.exists():
        return False
    if not path.is_file():
        raise UserError(f"registry {path} is not a regular file; move it away")
    if path.stat().st_size == 0:
        raise UserError(
            f"registry {path} is an empty file (0 bytes), not an evalcluster registry;"
            " if nothing should be in it, delete it and a new registry is created"
        )
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise UserError(
            f"registry {path} is not an SQLite database (bad header);"
            " restore it from a backup or move it away"
        )
    return True


@contextmanager
def translated(target: Target) -> Iterator[None]:
    """Driver errors that are about the database itself (unreachable, refused, damaged) -> UserError.

    Constraint violations and programming errors pass through unchanged. Every
    message is scrubbed of the password, and so is the chained cause.
    """
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as err:
        raise UserError(describe(err, target)) from scrubbed(err, target.url.password)
    except exc.DatabaseError as err:
        # IntegrityError, ProgrammingError, ...: the code's business, except a missing privilege.
        if (
            type(err) is not exc.DatabaseError
            and getattr(err.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE
        ):
            raise
        raise UserError(describe(err, target)) from scrubbed(err, target.url.password)


class Unreachable(UserError):
    """The registry's server stayed unreachable for the whole retry budget."""


def retry_budget_s() -> float:
    """EVALCLUSTER_DB_RETRY_S (cluster/specs/settings.py)."""
    return settings().db_retry_s


def with_retries(target: Target, attempt: Callable[[], T]) -> T:
    """``attempt()``, tried again while a PostgreSQL server is unreachable (OperationalError,
    InterfaceError: refused, reset, shutting down, starting up), 0.5 s apart doubling to 8 s, for
    up to ``retry_budget_s()``; then Unreachable. SQLite's errors (a lock has its busy timeout; the
    rest is about the file) and every other error are raised at once, for ``translated``."""
    budget = retry_budget_s() if target.backend == "postgresql" else 0.0
    start, delay = time.monotonic(), 0.5
    while True:
        try:
            return attempt()
        except (exc.OperationalError, exc.InterfaceError) as err:
            waited = time.monotonic() - start
            if budget == 0:
                raise
            if waited >= budget:
                raise Unreachable(
                    f"the registry database {target.display} stayed unreachable for {waited:.0f} s"
                    f" ({RETRY_ENV}={budget:g}): {driver_message(err, target)}"
                ) from scrubbed(err, target.url.password)
            if delay == 0.5:  # the first failure: said once
                log.warning(
                    "registry database %s unreachable (%s); trying again for up to %.0f s",
                    target.display, driver_message(err, target), budget - waited,
                )  # fmt: skip
            time.sleep(min(delay, max(0.0, budget - waited)))
            delay = min(2 * delay, 8.0)


def describe(err: exc.DBAPIError, target: Target) -> str:
    """One line: which database, what the driver said (scrubbed), what to check."""
    said = driver_message(err, target)
    if getattr(err.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
        return (
            f"the registry database {target.display} refused: {said} (its user needs to create and use"
            " evalcluster's tables there: e.g. make it the database's owner)"
        )
    if target.backend == "postgresql":
        return (
            f"cannot use the registry database {target.display}: {said}"
            " (check EVALCLUSTER_DB / EVALCLUSTER_DB_FILE and that the server is up)"
        )
    if "locked" in said:
        return f"registry {target.display} stayed locked by another process for {BUSY_TIMEOUT_S} s: {said}"
    return f"registry {target.display} is damaged{_truncation(target.path)}: {said}; restore it from a backup"


def driver_message(err: exc.DBAPIError, target: Target) -> str:
    """The driver's first line (the rest quotes SQL), on one line, without the password."""
    lines = [line for line in str(err.orig).splitlines() if line.strip()] or [type(err.orig).__name__]
    return target.scrub(" ".join(lines[0].split()))


def _truncation(path: Path | None) -> str:
    """' (truncated: N of M bytes)' when the SQLite header's page count says the file is cut short."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except (OSError, TypeError):
        return ""
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the header's page count is only kept up to date then
    return f" (truncated: {size} of {page * pages} bytes)" if valid and size < page * pages else ""
