"""Alias history, ranked scores, and the indexes the dashboard's pages filter and sort by.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

- ``alias_history``: one row per move of an alias (who, when, from which model to
  which, through which tool); ``Registry.set_alias`` / ``remove_alias`` write it in
  the same transaction as the alias itself. Aliases that exist when this revision
  runs get one row each, ``moved_by`` = ``unknown (before revision 0004)``.
- ``scores``: the scores of each finished evaluation or robustness run, one row per
  (metric, subset), written in the same transaction that finishes the run
  (cluster/registry/scores.py). Leaderboards rank and page with an index on it
  instead of parsing every run's metrics JSON. Runs finished before this revision
  are scored here, from the metrics their rows hold.
- indexes on ``runs`` for the run listing's filters, each ending in the listing's
  order (``created_at``, ``id``): owner, kind, model, and dataset and status
  (which replace the single-column ``runs_dataset`` and ``runs_status``).

No table is copied (plain CREATE / DROP INDEX), so ``runs_immutable`` is untouched.
"""

import json

import sqlalchemy as sa
from alembic import op

from cluster.registry.scores import SCORED_KINDS, score_rows

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RUN_INDEXES = {
    "runs_owner_created": "owner",
    "runs_kind_created": "kind",
    "runs_model_created": "model_id",
    "runs_dataset_created": "dataset_fingerprint",
    "runs_status_created": "status",
}
BATCH = 500  # runs scored per round trip during the backfill
BEFORE = "unknown (before revision 0004)"


def upgrade() -> None:
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("from_model", sa.Text),
        sa.Column("to_model", sa.Text),
        sa.Column("moved_by", sa.Text, nullable=False),
        sa.Column("moved_at", sa.Text, nullable=False),
        sa.Column("via", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("alias_history_alias", "alias_history", ["alias", "id"])
    op.create_table(
        "scores",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("dataset_fingerprint", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("subset", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "metric", "subset", name="pk_scores"),
    )
    rank = ["dataset_fingerprint", "metric", "subset", "kind", "value", "created_at", "run_id"]
    op.create_index("scores_rank", "scores", rank)
    op.create_index(
        "scores_datasets",
        "scores",
        ["metric", "subset", "kind", "dataset_fingerprint", "value", "created_at"],
    )
    op.drop_index("runs_dataset", "runs")
    op.drop_index("runs_status", "runs")
    for name, column in RUN_INDEXES.items():
        op.create_index(name, "runs", [column, "created_at", "id"])
    _backfill(op.get_bind())


def _backfill(conn) -> None:
    """Score the finished evaluation and robustness runs, and start each alias's history."""
    runs = sa.table(
        "runs",
        *(sa.column(c) for c in ("id", "kind", "status", "dataset_fingerprint", "metrics", "created_at")),
    )
    scores = sa.table("scores", *(sa.column(c) for c in SCORE_COLUMNS))
    last = ""
    while True:
        rows = conn.execute(
            sa.select(runs)
            .where(runs.c.kind.in_(SCORED_KINDS), runs.c.status == "finished", runs.c.id > last)
            .where(runs.c.dataset_fingerprint.is_not(None), runs.c.metrics.is_not(None))
            .order_by(runs.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        values = [
            {"run_id": r.id, "kind": r.kind, "dataset_fingerprint": r.dataset_fingerprint,
             "created_at": r.created_at, **s}
            for r in rows
            for s in score_rows(_json(r.metrics))
        ]  # fmt: skip
        if values:
            conn.execute(sa.insert(scores), values)
        last = rows[-1].id
    aliases = sa.table("aliases", sa.column("name"), sa.column("model_id"), sa.column("updated_at"))
    history = sa.table(
        "alias_history", *(sa.column(c) for c in ("alias", "to_model", "moved_by", "moved_at", "via"))
    )
    moved = [
        {
            "alias": a.name,
            "to_model": a.model_id,
            "moved_by": BEFORE,
            "moved_at": a.updated_at,
            "via": "unknown",
        }
        for a in conn.execute(sa.select(aliases).order_by(aliases.c.updated_at))
    ]
    if moved:
        conn.execute(sa.insert(history), moved)


SCORE_COLUMNS = (
    "run_id", "kind", "dataset_fingerprint", "metric", "subset", "value", "ci_low", "ci_high", "created_at",
)  # fmt: skip


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # a row written by hand with broken JSON ranks nowhere, as before
    return value if isinstance(value, dict) else {}


def downgrade() -> None:
    for name in RUN_INDEXES:
        op.drop_index(name, "runs")
    op.create_index("runs_status", "runs", ["status"])
    op.create_index("runs_dataset", "runs", ["dataset_fingerprint"])
    op.drop_index("scores_datasets", "scores")
    op.drop_index("scores_rank", "scores")
    op.drop_table("scores")
    op.drop_index("alias_history_alias", "alias_history")
    op.drop_table("alias_history")
