"""Runs whose outputs a later run overwrote (``--overwrite`` into the same --out directory).

A finished run's record is immutable, so an overwrite is a row of its own (``overwrites``,
schema revision 0004): recorded by the overwriting run before it removes the earlier run's
files, and looked up by everything that reads a run's outputs, which then says so in one line
instead of showing the later run's files as the earlier run's (`report`, `compare`, `gate`),
or shows it beside the record (`runs show`).
"""

from __future__ import annotations

from sqlalchemy import insert, select

from cluster.errors import UserError
from cluster.registry.db.schema import overwrites, runs
from cluster.registry.record import now


def mark_overwritten(registry, artifact_path: str, by_run: str) -> list[str]:
    """Record that run ``by_run`` overwrites the outputs at ``artifact_path``: every other finished
    run recorded there, not marked yet, is marked. Returns their ids. (``registry``: a
    cluster.registry.record.Registry.)"""
    earlier = (
        select(runs.c.id)
        .where(runs.c.artifact_path == artifact_path, runs.c.status == "finished", runs.c.id != by_run)
        .where(runs.c.id.not_in(select(overwrites.c.run_id)))
    )
    with registry.database.write() as conn:
        ids = list(conn.execute(earlier).scalars())
        for run_id in ids:
            conn.execute(
                insert(overwrites), {"run_id": run_id, "by_run": by_run, "at": now(), "path": artifact_path}
            )
    return ids


def overwritten(registry, run_id: str) -> dict | None:
    """{"by_run", "at", "path"} when a later run overwrote ``run_id``'s outputs, else None."""
    with registry.database.read() as conn:
        row = conn.execute(select(overwrites).where(overwrites.c.run_id == run_id)).first()
    return {k: row._mapping[k] for k in ("by_run", "at", "path")} if row else None


def require_outputs(registry, run: dict, what: str) -> None:
    """A UserError when ``run``'s outputs were overwritten: ``what`` (e.g. "its report") is gone."""
    gone = overwritten(registry, run["id"])
    if gone:
        raise UserError(
            f"run {run['id']}'s outputs in {gone['path']} were overwritten by run {gone['by_run']} at "
            f"{gone['at']} (--overwrite): {what} is gone (what is there now is {gone['by_run']}'s)"
        )
