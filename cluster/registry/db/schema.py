"""The registry's tables at the newest revision, for queries (SQLAlchemy Core).

The migrations under ``migrations/versions`` create and change the tables; this
module only describes them as they are at the head revision. Times are ISO 8601
UTC strings (``2026-11-28T18:30:12+00:00``) and JSON columns are text, as since
the first SQLite registry, so rows read the same on every backend.
"""

from __future__ import annotations

import json

from sqlalchemy import Column, Float, ForeignKey, Integer, MetaData, PrimaryKeyConstraint, Table, Text

STATUSES = ("running", "finished", "failed")
OUR_TABLES = frozenset({"runs", "models", "aliases", "alias_history", "scores", "overwrites"})
VERSION_TABLE = "evalcluster_schema"  # Alembic's version table, named so it cannot be another app's
JSON_COLUMNS = ("spec", "versions", "metrics", "lineage", "progress")

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("name", Text),
    Column("owner", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("status", Text, nullable=False),  # CHECK: one of STATUSES (revision 0002)
    Column("spec", Text, nullable=False),
    Column("git_commit", Text),
    Column("git_dirty", Integer),
    Column("versions", Text),
    Column("dataset_path", Text),
    Column("dataset_fingerprint", Text),
    Column("model_id", Text),
    Column("metrics", Text),
    Column("artifact_path", Text),
    Column("error", Text),
    Column("host", Text),  # the process that owns a running run (revision 0002)
    Column("pid", Integer),
    Column("heartbeat_at", Text),
    Column("progress", Text),  # {"done", "total", "unit"}, written with the heartbeat (revision 0006)
)

models = Table(
    "models",
    metadata,
    Column("id", Text, primary_key=True),
    Column("path", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("run_id", Text),
    Column("base_model", Text),
    Column("lineage", Text),
    Column("metrics", Text),
    Column("checksum", Text),  # sha256 over the model's file manifest (revision 0003)
)

aliases = Table(
    "aliases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("model_id", Text, ForeignKey("models.id"), nullable=False),
    Column("updated_at", Text, nullable=False),
)

alias_history = Table(  # revision 0004: one row per move of an alias
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alias", Text, nullable=False),
    Column("from_model", Text),  # NULL: the alias was new
    Column("to_model", Text),  # NULL: the alias was removed
    Column("moved_by", Text, nullable=False),
    Column("moved_at", Text, nullable=False),
    Column("via", Text, nullable=False),  # cli, ui, sweep, ...
    Column("note", Text),
)

scores = Table(  # revision 0004: what leaderboards rank (cluster/registry/scores.py)
    "scores",
    metadata,
    Column("run_id", Text, ForeignKey("runs.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("dataset_fingerprint", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("subset", Text, nullable=False),  # "" = all rows, slice:VALUE, perturbation:KIND@RATE
    Column("value", Float, nullable=False),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("created_at", Text, nullable=False),  # the run's, so ties rank newest first without a join
    PrimaryKeyConstraint("run_id", "metric", "subset", name="pk_scores"),
)


overwrites = Table(  # a run whose outputs a later run overwrote (--overwrite; revision 0005)
    "overwrites",
    metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("by_run", Text, ForeignKey("runs.id"), nullable=False),
    Column("at", Text, nullable=False),
    Column("path", Text, nullable=False),  # the directory both runs wrote
)


def decode_row(row) -> dict:
    """A result row as a dict, its JSON columns decoded."""
    d = dict(row._mapping)
    for key in JSON_COLUMNS:
        if d.get(key):
            d[key] = json.loads(d[key])
    return d
