"""Schema revisions (Alembic, driven from Python): where a database stands, and upgrades.

The revision scripts live in ``cluster/registry/db/migrations/versions`` (package data);
no alembic.ini is read. Before anything is written, a database is inspected:
tables that are not ours mean another application's database (refused, never
altered); a revision this code does not know means a newer evalcluster wrote it
(refused); the tables of the first registry without any revision are that
registry (stamped ``0001``, then upgraded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cluster.errors import UserError, first_items
from cluster.registry.db.schema import OUR_TABLES, VERSION_TABLE
from cluster.registry.db.url import Target

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
# The revisions in migrations/versions, oldest first (tests check this against Alembic's own
# reading). Kept here so that opening a registry does not import Alembic: that import is 0.3 s of
# the 0.7 s a process spends importing the registry (measured with python -X importtime).
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
# The columns of the registry.db written before migrations existed (revision 0001).
BASELINE_COLUMNS = {
    "runs": {
        "id", "kind", "name", "owner", "created_at", "finished_at", "status", "spec", "git_commit",
        "git_dirty", "versions", "dataset_path", "dataset_fingerprint", "model_id", "metrics",
        "artifact_path", "error",
    },
    "models": {"id", "path", "created_at", "run_id", "base_model", "lineage", "metrics"},
    "aliases": {"name", "model_id", "updated_at"},
}  # fmt: skip


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None: none recorded), this code's head, its tables."""

    revision: str | None
    head: str
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return not self.tables

    @property
    def unversioned(self) -> bool:
        """The first registry's tables with no revision recorded (upgraded from BASELINE)."""
        return self.revision is None and not self.empty

    @property
    def pending(self) -> bool:
        return self.revision != self.head

    @property
    def label(self) -> str:
        """The revision for messages: ``0002``, ``unversioned`` (the first registry) or ``none``."""
        return self.revision or ("unversioned" if self.unversioned else "none")


def head_revision() -> str:
    return REVISIONS[-1]


def inspect_schema(conn: Connection, target: Target) -> SchemaState:
    """Read the database's tables and revision; UserError when it is not (or not yet) ours to use."""
    insp = sa.inspect(conn)
    tables = set(insp.get_table_names())
    foreign = tables - OUR_TABLES - {VERSION_TABLE}
    if foreign:
        raise UserError(
            f"{target.display} is not an evalcluster registry: it holds other tables "
            f"({first_items(sorted(foreign))}); it was left untouched. Give evalcluster a database of its own"
        )
    revision = _recorded_revision(conn, target) if VERSION_TABLE in tables else None
    tables.discard(VERSION_TABLE)
    if revision is None and tables:
        _check_baseline(insp, tables, target)
    return SchemaState(revision, head_revision(), frozenset(tables))


def _recorded_revision(conn: Connection, target: Target) -> str:
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) != 1:
        raise UserError(f"{target.display}: {VERSION_TABLE} holds {len(rows)} revisions instead of one")
    if rows[0] not in REVISIONS:
        raise UserError(
            f"registry {target.display} is at schema revision {rows[0]}, newer than this code"
            f" (which knows up to {head_revision()}): upgrade evalcluster to use it"
        )
    return rows[0]


def _check_baseline(insp, tables: set[str], target: Target) -> None:
    columns = {t: {c["name"] for c in insp.get_columns(t)} for t in tables}
    if set(tables) != set(BASELINE_COLUMNS) or any(columns[t] != BASELINE_COLUMNS[t] for t in tables):
        raise UserError(
            f"{target.display} is not an evalcluster registry: tables {', '.join(sorted(tables))}"
            " without a schema revision, not those of a registry; it was left untouched"
        )


def upgrade(conn: Connection, state: SchemaState) -> None:
    """Upgrade to the head revision inside the caller's transaction (all or nothing where DDL allows)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    if state.unversioned:
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")
