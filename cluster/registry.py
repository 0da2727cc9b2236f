"""The team's shared record of runs and models: SQLite under EVALCLUSTER_HOME.

Layout of ``EVALCLUSTER_HOME`` (default ``~/.evalcluster``)::

    registry.db          runs, models, aliases (SQLite, WAL mode)
    runs/<run-id>/       a run's artifacts (metrics.json, predictions.parquet, ...)
    models/<model-id>/   registered model directories

A run moves ``running -> finished | failed`` exactly once; the UPDATE only
applies to a running row, so a finished record is never rewritten. Writers use
short transactions with a busy timeout, so several processes can write at once.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cluster.errors import UserError, did_you_mean

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT, owner TEXT NOT NULL,
  created_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
  spec TEXT NOT NULL, git_commit TEXT, git_dirty INTEGER, versions TEXT,
  dataset_path TEXT, dataset_fingerprint TEXT, model_id TEXT,
  metrics TEXT, artifact_path TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS runs_dataset ON runs(dataset_fingerprint);
CREATE TABLE IF NOT EXISTS models (
  id TEXT PRIMARY KEY, path TEXT NOT NULL, created_at TEXT NOT NULL, run_id TEXT,
  base_model TEXT, lineage TEXT, metrics TEXT
);
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT PRIMARY KEY, model_id TEXT NOT NULL REFERENCES models(id), updated_at TEXT NOT NULL
);
"""
STATUSES = ("running", "finished", "failed")


def default_home() -> Path:
    return Path(os.environ.get("EVALCLUSTER_HOME") or Path.home() / ".evalcluster").expanduser()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    """e.g. ``eval-20261128-183012-3fa9c1``: sortable by time, unique across processes."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class Registry:
    """Runs, models and aliases of one ``EVALCLUSTER_HOME``."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self._ready = False  # WAL mode and schema checked by this instance

    # -------------------------------------------------------------- plumbing

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._init_db()
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.home / "registry.db", timeout=60, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 60000")
        return con

    def _init_db(self) -> None:
        """WAL mode (readers never block the writer) and the schema, under a file lock.

        Switching the journal mode needs an exclusive lock that SQLite may refuse at
        once ("database is locked") instead of waiting, when other processes open the
        new database at the same moment; the lock serialises that first step.
        """
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "registry.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            con = self._connect()
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    con.execute("PRAGMA journal_mode = WAL")
                con.executescript(SCHEMA)
            finally:
                con.close()
        self._ready = True

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
        """Record a new ``running`` run with everything needed to reproduce it."""
        run_id = run_id or new_id(kind)
        commit, dirty = git_state()
        with self._db() as con:
            con.execute(
                "INSERT INTO runs (id, kind, name, owner, created_at, status, spec, git_commit,"
                " git_dirty, versions, dataset_path, dataset_fingerprint, model_id)"
                " VALUES (?,?,?,?,?,'running',?,?,?,?,?,?,?)",
                (
                    run_id,
                    kind,
                    name,
                    owner or default_owner(),
                    now(),
                    json.dumps(spec, default=str),
                    commit,
                    dirty,
                    json.dumps(package_versions()),
                    dataset_path,
                    dataset_fingerprint,
                    model_id,
                ),
            )
        return run_id

    def finish_run(
        self,
        run_id: str,
        metrics: dict | None = None,
        artifact_path: str | None = None,
        model_id: str | None = None,
    ) -> None:
        """running -> finished, once; afterwards the record is immutable."""
        self._transition(
            run_id,
            "finished",
            metrics=json.dumps(metrics, default=str) if metrics is not None else None,
            artifact_path=artifact_path,
            model_id=model_id,
        )

    def fail_run(self, run_id: str, error: str) -> None:
        """running -> failed (a no-op for a run that already ended)."""
        self._transition(run_id, "failed", error=error[:2000], strict=False)

    def _transition(self, run_id: str, status: str, strict: bool = True, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        sets = ", ".join(["status = ?", "finished_at = ?"] + [f"{k} = ?" for k in fields])
        with self._db() as con:
            cur = con.execute(
                f"UPDATE runs SET {sets} WHERE id = ? AND status = 'running'",
                (status, now(), *fields.values(), run_id),
            )
        if cur.rowcount != 1 and strict:
            raise RuntimeError(f"run {run_id} is not running; finished runs are immutable")

    @contextmanager
    def run(self, kind: str, spec: dict, **kwargs: Any) -> Iterator[str]:
        """Start a run; mark it failed if the block raises (the caller finishes it)."""
        run_id = self.start_run(kind, spec, **kwargs)
        try:
            yield run_id
        except BaseException as exc:
            self.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise

    def get_run(self, ref: str) -> dict:
        """A run by id or unique id prefix; UserError if none or ambiguous."""
        with self._db() as con:
            rows = con.execute(
                "SELECT * FROM runs WHERE id = ? OR id LIKE ? ORDER BY id", (ref, f"{ref}%")
            ).fetchall()
        exact = [r for r in rows if r["id"] == ref]
        rows = exact or rows
        if not rows:
            raise UserError(f'no run "{ref}" in {self.home}{did_you_mean(ref, self._run_ids())}')
        if len(rows) > 1:
            raise UserError(f'run "{ref}" is ambiguous: {", ".join(r["id"] for r in rows[:5])}')
        return _decode(rows[0])

    def list_runs(
        self,
        *,
        owner: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        dataset_fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Runs, newest first, filtered by the given fields."""
        where, args = [], []
        for col, val in [
            ("owner", owner),
            ("kind", kind),
            ("status", status),
            ("dataset_fingerprint", dataset_fingerprint),
        ]:
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._db() as con:
            return [_decode(r) for r in con.execute(sql, args).fetchall()]

    def _run_ids(self) -> list[str]:
        with self._db() as con:
            return [r[0] for r in con.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 500")]

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
    ) -> str:
        """Record a model directory (already complete on disk); returns its id."""
        model_id = model_id or new_id("m")
        with self._db() as con:
            con.execute(
                "INSERT INTO models VALUES (?,?,?,?,?,?,?)",
                (
                    model_id,
                    str(path),
                    now(),
                    run_id,
                    base_model,
                    json.dumps(lineage or {}, default=str),
                    json.dumps(metrics or {}, default=str),
                ),
            )
        return model_id

    def set_alias(self, name: str, model_ref: str) -> str:
        """Point alias ``name`` (e.g. best, serving) at a model id or another alias."""
        row = self.resolve_model(model_ref)
        if row is None:
            raise UserError(f'no registered model "{model_ref}"{did_you_mean(model_ref, self.model_names())}')
        with self._db() as con:
            con.execute(
                "INSERT INTO aliases VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "model_id = excluded.model_id, updated_at = excluded.updated_at",
                (name, row["id"], now()),
            )
        return row["id"]

    def resolve_model(self, ref: str) -> dict | None:
        """A model row by alias, id, or unique id prefix; None when nothing matches."""
        with self._db() as con:
            alias = con.execute("SELECT model_id FROM aliases WHERE name = ?", (ref,)).fetchone()
            mid = alias[0] if alias else ref
            row = con.execute("SELECT * FROM models WHERE id = ?", (mid,)).fetchone()
            if row is None and len(ref) >= 6:
                rows = con.execute("SELECT * FROM models WHERE id LIKE ?", (f"{ref}%",)).fetchall()
                row = rows[0] if len(rows) == 1 else None
        return _decode(row) if row else None

    def list_models(self) -> list[dict]:
        with self._db() as con:
            rows = con.execute(
                "SELECT m.*, group_concat(a.name) AS aliases FROM models m "
                "LEFT JOIN aliases a ON a.model_id = m.id GROUP BY m.id "
                "ORDER BY m.created_at DESC"
            ).fetchall()
        return [_decode(r) for r in rows]

    def model_names(self) -> list[str]:
        """Aliases and ids, for "did you mean" and error messages."""
        with self._db() as con:
            aliases = [r[0] for r in con.execute("SELECT name FROM aliases ORDER BY name")]
            ids = [r[0] for r in con.execute("SELECT id FROM models ORDER BY created_at DESC")]
        return aliases + ids


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("spec", "versions", "metrics", "lineage"):
        if d.get(key):
            d[key] = json.loads(d[key])
    return d


def default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def git_state() -> tuple[str | None, int | None]:
    """(commit, dirty) of the code that runs, or (None, None) outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None, None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip(), int(bool(dirty.stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):
        return None, None


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("ray", "torch", "transformers", "scikit-learn", "evalcluster"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out
