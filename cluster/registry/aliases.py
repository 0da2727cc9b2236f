"""Moving an alias, and its history: who pointed which alias at which model, when, from what.

Every move (``Registry.set_alias``, ``Registry.remove_alias``: the CLI, a sweep
promoting ``best``, the dashboard) changes the ``aliases`` row and appends an
``alias_history`` row in one write transaction, so the history is exactly the
sequence of moves. Inside that transaction the alias row is read first (locked
``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers), so ``from_model`` is what the move replaced even when two people move
the same alias at once.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from cluster.registry.db.schema import alias_history, aliases

MAX_NOTE = 500  # characters of a move's note that are kept
MAX_BY = 200  # characters of who moved it


def move(
    conn: Connection, name: str, model_id: str, at: str, by: str, via: str, note: str | None = None
) -> str | None:
    """Point ``name`` at ``model_id`` and record it (in the caller's write transaction);
    returns the model it pointed at before (None: a new alias)."""
    before = _current(conn, name)
    stmt = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(aliases)
    stmt = stmt.values(name=name, model_id=model_id, updated_at=at)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[aliases.c.name],
            set_={"model_id": stmt.excluded.model_id, "updated_at": stmt.excluded.updated_at},
        )
    )
    _record(conn, name, before, model_id, at, by, via, note)
    return before


def drop(conn: Connection, name: str, at: str, by: str, via: str, note: str | None = None) -> str | None:
    """Remove ``name`` and record it; returns the model it pointed at (None: no such alias)."""
    model_id = conn.execute(
        delete(aliases).where(aliases.c.name == name).returning(aliases.c.model_id)
    ).scalar()
    if model_id is not None:
        _record(conn, name, model_id, None, at, by, via, note)
    return model_id


def _current(conn: Connection, name: str) -> str | None:
    stmt = select(aliases.c.model_id).where(aliases.c.name == name)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).scalar()


def _record(conn, name, before, after, at, by, via, note) -> None:
    conn.execute(
        insert(alias_history).values(
            alias=name,
            from_model=before,
            to_model=after,
            moved_by=by[:MAX_BY],
            moved_at=at,
            via=via,
            note=note[:MAX_NOTE] if note else None,
        )
    )
