"""The team's shared record of runs and models, on SQLite or PostgreSQL (SQLAlchemy Core).

``EVALCLUSTER_HOME`` (default ``~/.evalcluster``) holds ``registry.db`` (SQLite, WAL mode) unless
EVALCLUSTER_DB or EVALCLUSTER_DB_FILE name a PostgreSQL database (cluster/registry/db/url.py). Runs'
artifacts and models are in the artifact store (cluster/registry/artifacts.py: ``runs/<run-id>/``,
``models/<model-id>/``, by default under EVALCLUSTER_HOME); the registry records their locations.

A run moves ``running -> finished | failed`` exactly once. The database holds
the rules, not only this code: a CHECK on the status, UPDATEs that only match a
running row, and a trigger that refuses any change to a finished or failed run
(revision 0002). A running run records its owner process and a heartbeat
(cluster/registry/heartbeat.py), so a killed process's run can be seen and marked failed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cluster.errors import UserError, did_you_mean, printable
from cluster.registry import aliases as alias_moves
from cluster.registry.db.schema import STATUSES, aliases, decode_row, models, runs
from cluster.registry.db.store import Database
from cluster.registry.deferred import RecordLater
from cluster.registry.heartbeat import Heartbeat, heartbeat_period, owner_process, seconds_since, stale_reason
from cluster.registry.progress import PendingProgress, progress_value
from cluster.registry.provenance import default_owner, git_state, package_versions
from cluster.registry.queries import RunFilter
from cluster.registry.scores import finish_scored, score_rows
from cluster.specs.settings import settings

__all__ = ["STATUSES", "Registry", "check_alias", "default_home", "default_owner", "new_id", "now"]

# Alias names: a letter or digit, then letters, digits, '.', '_', '-'; 64 characters at most.
ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_ALIASES = {"base"}  # `base` always means the bundled pretrained model
MAX_REF = 200  # ids are ~30 characters; a longer reference is a mistake, not a lookup


def default_home() -> Path:
    return settings().home.expanduser()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    """e.g. ``eval-20261128-183012-3fa9c1``: sortable by time, unique across processes."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_alias(name: str) -> str:
    """``name`` if it is a valid alias name, else a UserError saying what is allowed."""
    if name in RESERVED_ALIASES:
        raise UserError(
            f'"{name}" is reserved (it always means the bundled pretrained model); pick another alias'
        )
    if not ALIAS_PATTERN.fullmatch(name):
        shown = _shown(name)
        raise UserError(
            f'invalid alias name "{shown}": use 1-64 letters, digits, ".", "_" or "-", starting with a'
            " letter or digit"
        )
    return name


def _shown(text: str, limit: int = 80) -> str:
    """A user-supplied string for a one-line message: control characters visible, cut at ``limit``."""
    return printable(text[:limit]) + ("..." if len(text) > limit else "")


def check_ref(ref: str, what: str) -> str:
    """A run/model reference fit for a lookup (not empty, not absurdly long)."""
    if not ref:
        raise UserError(f"empty {what} id")
    if len(ref) > MAX_REF:
        raise UserError(f"{what} id of {len(ref)} characters; ids are at most {MAX_REF} characters")
    return ref


class Registry:
    """Runs, models and aliases of one ``EVALCLUSTER_HOME`` (or of the shared database it names)."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self._db: Database | None = None
        self._progress = PendingProgress()  # written by the runs' heartbeats (set_progress)

    @property
    def database(self) -> Database:
        """The opened database, its schema checked (and upgraded where that is automatic) on first use."""
        if self._db is not None and self._db.pid != os.getpid():
            self._db.engine.dispose(close=False)  # a forked child must not close its parent's connections
            self._db = None
        if self._db is None:
            self._db = Database.open(self.home)
        return self._db

    def close(self) -> None:
        """Close the database connections (reopened on the next use)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def model_dir(self, model_id: str) -> Path:
        return self.home / "models" / model_id

    # -------------------------------------------------------------- runs

    def start_run(
        self,
        kind: str,
        spec: dict,
        *,
        owner: str | None = None,
        name: str | None = None,
        dataset_path: str | None = None,
        dataset_fingerprint: str | None = None,
        model_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new ``running`` run with everything needed to reproduce it, owned by this process."""
        run_id = run_id or new_id(kind)
        commit, dirty = git_state()
        host, pid = owner_process()
        started = now()
        row = {
            "id": run_id, "kind": kind, "name": name, "owner": owner or default_owner(),
            "created_at": started, "status": "running", "spec": json.dumps(spec, default=str),
            "git_commit": commit, "git_dirty": dirty, "versions": json.dumps(package_versions()),
            "dataset_path": dataset_path, "dataset_fingerprint": dataset_fingerprint,
            "model_id": model_id, "host": host, "pid": pid, "heartbeat_at": started,
        }  # fmt: skip
        try:
            self.database.write_one(insert(runs), row)
        except IntegrityError as exc:
            raise UserError(f'run id "{_shown(run_id)}" is already taken') from exc
        return run_id

    def finish_run(self, run_id: str, metrics=None, artifact_path: str | None = None, model_id=None) -> None:
        """running -> finished, once; afterwards the record is immutable. An evaluation's scores
        (cluster/registry/scores.py) are written in the same transaction."""
        encoded = json.dumps(metrics, default=str) if metrics is not None else None
        values = {"metrics": encoded, "artifact_path": artifact_path, "model_id": model_id}
        values["progress"] = self._progress.peek(run_id)  # how far it got, kept with the record
        rows = score_rows(metrics)
        if not rows:  # one statement: autocommit on PostgreSQL, no BEGIN/COMMIT round trips
            self._transition(run_id, "finished", **values)
            return
        values = {
            "finished_at": now(),
            **{k: v for k, v in values.items() if v is not None},
        }
        if not finish_scored(self.database, run_id, values, rows):
            raise RuntimeError(_NOT_RUNNING.format(run_id=run_id))

    def fail_run(self, run_id: str, error: str) -> None:
        """running -> failed (a no-op for a run that already ended)."""
        self._transition(
            run_id, "failed", error=error[:2000], progress=self._progress.peek(run_id), strict=False
        )

    def _transition(self, run_id: str, status: str, strict: bool = True, **fields: Any) -> bool:
        values = {
            "status": status,
            "finished_at": now(),
            **{k: v for k, v in fields.items() if v is not None},
        }
        changed = self.database.write_one(_UPDATE_RUNNING, {"run_id": run_id, **values}) == 1
        if not changed and strict:
            raise RuntimeError(_NOT_RUNNING.format(run_id=run_id))
        return changed

    def set_progress(self, run_id: str, done: int, total: int | None = None, unit: str = "rows") -> None:
        """How far the running run got (cluster/registry/progress.py); kept in memory and written with
        the run's next heartbeat (or its finish): no database round trip here, whatever the rate."""
        self._progress.set(run_id, progress_value(done, total, unit))

    def beat(self, run_id: str) -> bool:
        """Record that the run's process is alive, with its newest progress; False once the run is no
        longer running. A beat that fails keeps the progress for the next one."""
        values = {"run_id": run_id, "heartbeat_at": now()}
        progress = self._progress.peek(run_id)
        if progress is not None:
            values["progress"] = progress
        alive = self.database.write_one(_UPDATE_RUNNING, values) == 1
        if progress is not None:
            self._progress.written(run_id, progress)
        return alive

    @contextmanager
    def run(self, kind: str, spec: dict, **kwargs: Any) -> Iterator[str]:
        """Start a run and keep its heartbeat while the block runs; mark it failed if the block raises
        (not RecordLater: that run finished). The caller finishes the run inside the block."""
        run_id = self.start_run(kind, spec, **kwargs)
        heartbeat = Heartbeat(lambda: self.beat(run_id), heartbeat_period(), f"heartbeat-{run_id}").start()
        try:
            yield run_id
        except BaseException as exc:
            if not isinstance(exc, RecordLater):  # a finished run: `evalctl runs record` records it
                self.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            heartbeat.stop()

    def mark_failed(self, ref: str, reason: str) -> dict:
        """A user's `runs fail RUN`: the running run ``ref`` -> failed with ``reason``; returns the run."""
        run = self.get_run(ref)
        if run["status"] != "running" or not self._transition(
            run["id"], "failed", False, error=reason[:2000]
        ):
            run = self.get_run(run["id"])
            raise UserError(f"run {run['id']} is {run['status']}, not running; its record is final")
        return run

    def fail_stale_runs(self, reason: str, older_than_s: float | None = None) -> list[dict]:
        """Mark failed every stale running run (last seen more than ``older_than_s`` ago, if given).

        Each UPDATE also matches the heartbeat it judged by, so a run that beats in
        the meantime is left running.
        """
        failed = []
        for run in self.list_runs(status="running"):
            why = stale_reason(run)
            seen = seconds_since(run["heartbeat_at"] or run["created_at"])
            if why is None or (older_than_s is not None and seen <= older_than_s):
                continue
            stmt = (
                update(runs)
                .where(runs.c.id == run["id"], runs.c.status == "running")
                .where(runs.c.heartbeat_at.is_not_distinct_from(run["heartbeat_at"]))
                .values(status="failed", finished_at=now(), error=f"{reason}: {why}"[:2000])
            )
            if self.database.write_one(stmt) == 1:
                failed.append({**run, "stale": why})
        return failed

    def get_run(self, ref: str) -> dict:
        """A run by id or unique id prefix; UserError if none or ambiguous."""
        check_ref(ref, "run")
        with self.database.read() as conn:
            rows = (
                conn.execute(_RUN_BY_ID, {"ref": ref}).all()
                or conn.execute(
                    select(runs)
                    .where(runs.c.id.startswith(ref, autoescape=True))
                    .order_by(runs.c.id)
                    .limit(6)
                ).all()
            )
        if not rows:
            shown = _shown(ref)
            raise UserError(f'no run "{shown}" in {self._where()}{did_you_mean(shown, self._run_ids())}')
        if len(rows) > 1:
            raise UserError(f'run "{_shown(ref)}" is ambiguous: {", ".join(r.id for r in rows[:5])}')
        return decode_row(rows[0])

    def list_runs(
        self,
        *,
        owner: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        dataset_fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Runs, newest first, filtered by the given fields (cluster/registry/queries.py RunFilter)."""
        where = RunFilter(owner=owner, kind=kind, status=status, dataset=dataset_fingerprint)
        stmt = where.where(select(runs)).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if limit:
            stmt = stmt.limit(int(limit))
        with self.database.read() as conn:
            return [decode_row(r) for r in conn.execute(stmt)]

    def _run_ids(self) -> list[str]:
        with self.database.read() as conn:
            return list(conn.execute(select(runs.c.id).order_by(runs.c.id.desc()).limit(500)).scalars())

    def _where(self) -> str:
        return self.database.target.display

    # -------------------------------------------------------------- models

    def register_model(
        self,
        path: str | Path,
        *,
        run_id: str | None = None,
        base_model: str | None = None,
        lineage: dict | None = None,
        metrics: dict | None = None,
        model_id: str | None = None,
        checksum: str | None = None,
    ) -> str:
        """Record a model directory (or store URI) whose files are complete; returns its id."""
        model_id = model_id or new_id("m")
        row = dict(id=model_id, path=str(path), checksum=checksum, created_at=now(), run_id=run_id)
        row.update(base_model=base_model, lineage=json.dumps(lineage or {}, default=str))
        row["metrics"] = json.dumps(metrics or {}, default=str)
        try:
            self.database.write_one(insert(models), row)
        except IntegrityError as exc:
            raise UserError(f'model id "{_shown(model_id)}" is already taken') from exc
        return model_id

    def set_alias(self, name: str, model_ref: str, *, by: str | None = None, via="cli", note=None) -> str:
        """Point alias ``name`` (e.g. best, serving) at a model id or another alias; the move is
        recorded in the alias's history (``by``: who, default the OS user; ``via``: which tool)."""
        check_alias(name)
        row = self.resolve_model(model_ref)
        if row is None:
            shown = _shown(model_ref)
            raise UserError(f'no registered model "{shown}"{did_you_mean(shown, self.model_names())}')
        with self.database.write() as conn:
            alias_moves.move(conn, name, row["id"], now(), by or default_owner(), via, note)
        return row["id"]

    def remove_alias(self, name: str, *, by: str | None = None, via="cli", note=None) -> str:
        """Remove alias ``name`` (the model stays registered; the removal is recorded in its history);
        returns the model id it pointed at."""
        check_ref(name, "alias")
        with self.database.write() as conn:
            model_id = alias_moves.drop(conn, name, now(), by or default_owner(), via, note)
        if model_id is None:
            known = [a for a in self.model_names() if not a.startswith("m-")]
            shown = _shown(name)
            raise UserError(
                f'no alias "{shown}"{did_you_mean(shown, known)}; aliases: {", ".join(known) or "none"}'
            )
        return model_id

    def resolve_model(self, ref: str) -> dict | None:
        """A model row by alias, id, or unique id prefix; None when nothing matches.

        (An empty or over-long reference matches nothing: it is usually a path that
        does not exist, and the caller says so.)
        """
        if not ref or len(ref) > MAX_REF:
            return None
        with self.database.read() as conn:
            row = conn.execute(_MODEL_BY_ALIAS_OR_ID, {"ref": ref}).first()
            if row is None and len(ref) >= 6:
                prefix = models.c.id.startswith(ref, autoescape=True)
                rows = conn.execute(select(models).where(prefix).limit(2)).all()
                row = rows[0] if len(rows) == 1 else None
        return decode_row(row) if row else None

    def model_at(self, path: str) -> dict | None:
        """The newest model registered at ``path`` (a directory or URI), or None."""
        with self.database.read() as conn:
            row = conn.execute(_MODEL_AT, {"path": str(path)}).first()
        return decode_row(row) if row else None

    def list_models(self) -> list[dict]:
        """Models, newest first; ``aliases`` is their comma-joined alias names (None without any)."""
        with self.database.read() as conn:
            rows = conn.execute(select(models).order_by(models.c.created_at.desc(), models.c.id.desc())).all()
            pairs = conn.execute(select(aliases.c.model_id, aliases.c.name).order_by(aliases.c.name)).all()
        names: dict[str, list[str]] = {}
        for model_id, name in pairs:
            names.setdefault(model_id, []).append(name)
        return [{**decode_row(r), "aliases": ",".join(names.get(r.id, [])) or None} for r in rows]

    def model_names(self) -> list[str]:
        """Aliases and ids, for "did you mean" and error messages."""
        with self.database.read() as conn:
            names = list(conn.execute(select(aliases.c.name).order_by(aliases.c.name)).scalars())
            ids = list(conn.execute(select(models.c.id).order_by(models.c.created_at.desc())).scalars())
        return names + ids


# Statements with their values bound at execution: compiled once per process (measured: a
# start+finish pair cost 2.0-2.4 ms of client CPU with values baked into each statement, 0.8 ms so).
# The SET columns of an UPDATE come from the parameters it is executed with.
_UPDATE_RUNNING = update(runs).where(runs.c.id == bindparam("run_id"), runs.c.status == "running")
_NOT_RUNNING = "run {run_id} is not running (it ended, or was marked failed); finished runs are immutable"
_RUN_BY_ID = select(runs).where(runs.c.id == bindparam("ref"))
_MODEL_AT = select(models).where(models.c.path == bindparam("path")).order_by(models.c.created_at.desc())
# The model an alias points at, else the model with that id (an alias wins, as it always has);
# one round trip, and the scalar subquery lets both lookups use their primary keys.
_ALIASED = select(aliases.c.model_id).where(aliases.c.name == bindparam("ref")).scalar_subquery()
_MODEL_BY_ALIAS_OR_ID = select(models).where(models.c.id == func.coalesce(_ALIASED, bindparam("ref")))
