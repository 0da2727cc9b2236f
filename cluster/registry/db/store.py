"""The registry's database, opened, checked and upgraded: transactions for the Registry.

Opening follows the backend's nature:

- SQLite (one user's file): a registry.db from older code is upgraded in place
  when it is opened. ``registry.lock`` serialises opening across processes: a
  new database is built under a temporary name and linked into place complete
  (so a crash never leaves an empty or half-made registry.db), and an upgrade or
  a switch to WAL mode (which needs an exclusive lock that SQLite may refuse at
  once instead of waiting) never races another process's first open.
- PostgreSQL (the team's server): an empty database gets the schema on first
  use; an existing one is upgraded only by ``evalctl db upgrade``, so one
  user's newer client never changes the schema under the whole team. Upgrades
  hold a transaction-scoped advisory lock and run in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from cluster.errors import UserError
from cluster.registry.db.engine import (
    WRITE,
    check_sqlite_file,
    driver_message,
    make_engine,
    set_wal,
    sqlite_engine,
    translated,
    with_retries,
)
from cluster.registry.db.migrate import SchemaState, head_revision, inspect_schema, upgrade
from cluster.registry.db.url import Target, resolve, scrubbed

LOCK_FILE = "registry.lock"
PG_LOCK_KEY = 0x65_76_61_6C_63_6C_75  # pg_advisory_xact_lock key of schema upgrades ("evalclu")


class Database:
    """An engine on a registry database whose schema is at this code's revision."""

    def __init__(self, target: Target, engine: Engine):
        self.target = target
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        # One statement is atomic on its own: on PostgreSQL it runs in autocommit mode,
        # without the BEGIN and COMMIT round trips: 4 instead of 8 round trips per
        # start+finish pair (counted in the server's statement log). SQLite has no round trips.
        self._single = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if target.backend == "postgresql"
            else self._writer
        )
        self.pid = os.getpid()  # an engine's pooled connections must not cross a fork

    @classmethod
    def open(cls, home: Path, upgrade: bool = False) -> Database:
        """Open the registry of ``home`` (see the module docstring for when it is upgraded)."""
        target = resolve(home)
        opener = _open_sqlite if target.backend == "sqlite" else _open_postgres
        return opener(target, upgrade)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (one snapshot per statement on PostgreSQL, per transaction on SQLite)."""
        with translated(self.target), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed at the end of the block, rolled back on an error."""
        with translated(self.target), self._writer.begin() as conn:
            yield conn

    def write_one(self, statement, params: dict | None = None) -> int:
        """Run one writing statement as its own transaction; returns the number of rows it changed.

        Values passed as ``params`` (not baked into the statement) keep the statement
        constant, so SQLAlchemy compiles it once per process. An unreachable PostgreSQL server is
        waited for (engine.py: with_retries).
        """

        def once() -> int:
            with self._single.begin() as conn:
                return conn.execute(statement, params).rowcount

        with translated(self.target):
            return with_retries(self.target, once)

    def write_one_row(self, statement, params: dict | None = None):
        """Like :meth:`write_one`, for a statement that returns rows (RETURNING, or DML in a CTE);
        returns its first row (None without one). An unreachable server is waited for too."""

        def once():
            with self._single.begin() as conn:
                return conn.execute(statement, params).first()

        with translated(self.target):
            return with_retries(self.target, once)

    def state(self) -> SchemaState:
        with self.read() as conn:
            return inspect_schema(conn, self.target)

    def upgrade(self) -> SchemaState:
        """Upgrade to the head revision (under the backend's lock); returns the state before.

        One transaction: rows that break a new rule (a CHECK) roll the whole upgrade back.
        """
        before = None
        try:
            with self.write() as conn:
                if self.target.backend == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_LOCK_KEY)))
                before = inspect_schema(conn, self.target)  # again: another process may have upgraded
                if before.pending:
                    upgrade(conn, before)
        except IntegrityError as err:
            raise UserError(
                f"cannot upgrade registry {self.target.display} from revision"
                f" {before.label} to {before.head}, left as it was:"
                f" {driver_message(err, self.target)}"
            ) from scrubbed(err, self.target.url.password)
        return before

    def close(self) -> None:
        self.engine.dispose()


def status(home: Path) -> dict:
    """Backend, database (password hidden), revision, head, and whether an upgrade is pending.

    Reads only: a missing SQLite file is not created, nothing is upgraded.
    ``revision`` is None for a new (empty or absent) database and "unversioned"
    for a registry written before schema revisions existed.
    """
    target = resolve(home)
    info = {"backend": target.backend, "database": target.display, "head": head_revision()}
    if target.backend == "sqlite" and not check_sqlite_file(target.path):
        return {**info, "revision": None, "empty": True, "pending": True}
    db = Database(target, make_engine(target))
    try:
        state = db.state()
    finally:
        db.close()
    revision = None if state.empty else state.label
    return {**info, "revision": revision, "empty": state.empty, "pending": state.pending}


# ------------------------------------------------------------------ per backend


def _open_sqlite(target: Target, upgrade: bool) -> Database:
    del upgrade  # a SQLite registry is always brought up to date when opened
    with _file_lock(target.path.parent / LOCK_FILE):
        if not check_sqlite_file(target.path):
            _create_sqlite(target)
        db = Database(target, make_engine(target))
        try:
            if db.state().pending:
                db.upgrade()
            set_wal(db.engine)  # after the checks: nothing is written to a file that is not ours
        except BaseException:
            db.close()
            raise
    return db


def _create_sqlite(target: Target) -> None:
    """A new registry.db, complete before it appears under its name (never over an existing file)."""
    tmp = target.path.with_name(f".{target.path.name}.new-{os.getpid()}")
    _remove_sqlite_files(tmp)
    engine = sqlite_engine(tmp, create=True)
    try:
        set_wal(engine)
        db = Database(target, engine)
        db.upgrade()
        engine.dispose()  # the last connection closes: WAL checkpointed into the file and removed
        if Path(f"{tmp}-wal").exists():
            raise RuntimeError(f"{tmp}: SQLite left its WAL behind; not linking a partial registry")
        _place(tmp, target.path)
    finally:
        engine.dispose()
        _remove_sqlite_files(tmp)


def _place(tmp: Path, path: Path) -> None:
    """Give the new file its name without ever replacing a file that appeared meanwhile."""
    try:
        os.link(tmp, path)  # fails if ``path`` exists
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: rename, checked under registry.lock
        if path.exists():
            raise
        os.rename(tmp, path)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _open_postgres(target: Target, upgrade: bool) -> Database:
    db = Database(target, make_engine(target))
    try:
        state = db.state()
        if state.pending and (state.empty or upgrade):
            db.upgrade()
        elif state.pending:
            raise UserError(
                f"registry {target.display} is at schema revision {state.label}, this code"
                f" needs {state.head}: run `evalctl db upgrade` (once, for everyone using it)"
            )
    except BaseException:
        db.close()
        raise
    return db
