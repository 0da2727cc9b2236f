"""Listings of the team's record, a page at a time, filtered and ordered in the database.

The CLI's listings and the dashboard's pages call these, so both show the same
records. Every query has a LIMIT and an index to walk (revision 0004): runs newest
first by ``(created_at, id)`` with keyset pages (a page starts after the last row
of the one before, so page 1,000 costs what page 1 costs), models likewise,
alias moves by their id. Nothing here loads a table into Python.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, timedelta

from sqlalchemy import func, select, tuple_

from cluster.errors import UserError, did_you_mean, printable
from cluster.registry.db.schema import STATUSES, alias_history, aliases, decode_row, models, runs
from cluster.registry.db.store import Database

MAX_PAGE = 500  # rows per page, at most
MAX_FILTER = 200  # characters of a filter value (ids are ~30)


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list; None = any. ``since``/``until``: days (UTC), both included."""

    kind: str | None = None
    status: str | None = None
    owner: str | None = None
    model: str | None = None  # a model id
    dataset: str | None = None  # a dataset fingerprint
    since: date | None = None
    until: date | None = None

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise UserError(
                f'unknown status "{printable(self.status)}"{did_you_mean(self.status, STATUSES)};'
                f" choose from {', '.join(STATUSES)}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and len(value) > MAX_FILTER:
                raise UserError(f"{f.name}: {len(value)} characters; filters are at most {MAX_FILTER}")

    def where(self, stmt):
        """``stmt`` (a select over ``runs``) with this filter's conditions."""
        for column, value in (
            (runs.c.kind, self.kind),
            (runs.c.status, self.status),
            (runs.c.owner, self.owner),
            (runs.c.model_id, self.model),
            (runs.c.dataset_fingerprint, self.dataset),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if self.since is not None:  # ISO 8601 text compares as time: "2026-11-28T..." >= "2026-11-28"
            stmt = stmt.where(runs.c.created_at >= self.since.isoformat())
        if self.until is not None:
            stmt = stmt.where(runs.c.created_at < (self.until + timedelta(days=1)).isoformat())
        return stmt


@dataclass
class Page:
    """One page of rows, newest first, and the cursors of the pages around it (None: no such page)."""

    rows: list[dict]
    newer: str | None = None  # ?after=: the page before this one
    older: str | None = None  # ?before=: the page after this one


def cursor(created_at: str, key: str) -> str:
    return f"{created_at}|{key}"


def parse_cursor(text: str) -> tuple[str, str]:
    created, sep, key = text.partition("|")
    if not sep or not created or not key or len(text) > 2 * MAX_FILTER:
        raise UserError(f'bad page cursor "{printable(text[:80])}"')
    return created, key


def runs_page(
    db: Database, where: RunFilter, limit: int = 50, before: str | None = None, after: str | None = None
) -> Page:
    """Runs matching ``where``, newest first: the first page, the page older than ``before``, or
    the page newer than ``after`` (cursors of a Page). Rows are decoded (JSON columns as dicts)."""
    return _keyset(db, where.where(select(runs)), runs, limit, before, after)


def count_runs(db: Database, where: RunFilter) -> int:
    with db.read() as conn:
        return conn.execute(where.where(select(func.count()).select_from(runs))).scalar_one()


def models_page(db: Database, limit: int = 50, before: str | None = None, after: str | None = None) -> Page:
    """Registered models, newest first, each with ``aliases``: the names pointing at it (a list)."""
    page = _keyset(db, select(models), models, limit, before, after)
    ids = [m["id"] for m in page.rows]
    with db.read() as conn:
        stmt = select(aliases.c.model_id, aliases.c.name).where(aliases.c.model_id.in_(ids))
        pairs = conn.execute(stmt.order_by(aliases.c.name)).all()
    names: dict[str, list[str]] = {}
    for model_id, name in pairs:
        names.setdefault(model_id, []).append(name)
    for m in page.rows:
        m["aliases"] = names.get(m["id"], [])
    return page


def all_aliases(db: Database) -> list[dict]:
    """Every alias with the model it points at (aliases are few: a team names a handful)."""
    model = (models.c.created_at.label("model_created_at"), models.c.run_id.label("model_run_id"))
    stmt = select(aliases, *model)
    stmt = stmt.join(models, models.c.id == aliases.c.model_id, isouter=True).order_by(aliases.c.name)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def alias_moves(
    db: Database,
    alias: str | None = None,
    model: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[dict]:
    """Moves of aliases, newest first: of ``alias``, or to or from ``model``; ``before``: older moves."""
    stmt = select(alias_history).order_by(alias_history.c.id.desc()).limit(page_limit(limit))
    if alias is not None:
        stmt = stmt.where(alias_history.c.alias == alias)
    if model is not None:
        stmt = stmt.where((alias_history.c.to_model == model) | (alias_history.c.from_model == model))
    if before is not None:
        stmt = stmt.where(alias_history.c.id < before)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _keyset(db: Database, stmt, table, limit: int, before: str | None, after: str | None) -> Page:
    """Newest-first pages of ``table`` by (created_at, id); one extra row says whether more exist."""
    limit = page_limit(limit)
    key = tuple_(table.c.created_at, table.c.id)
    if after is not None:  # the newer page: walk up from the cursor, then show it newest first
        stmt = stmt.where(key > tuple_(*parse_cursor(after)))
        stmt = stmt.order_by(table.c.created_at, table.c.id)
    else:
        if before is not None:
            stmt = stmt.where(key < tuple_(*parse_cursor(before)))
        stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc())
    with db.read() as conn:
        rows = [decode_row(r) for r in conn.execute(stmt.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        rows.reverse()
    if not rows:
        return Page(rows)
    first, last = (cursor(r["created_at"], r["id"]) for r in (rows[0], rows[-1]))
    if after is not None:  # older rows exist: at least the cursor's own
        newer, older = (first if more else None), last
    else:
        newer, older = (first if before is not None else None), (last if more else None)
    return Page(rows, newer, older)


def page_limit(limit: int) -> int:
    """``limit`` when it is a page size we serve (1 to MAX_PAGE), else a UserError."""
    if not 1 <= int(limit) <= MAX_PAGE:
        raise UserError(f"page size must be 1 to {MAX_PAGE}, got {limit}")
    return int(limit)
