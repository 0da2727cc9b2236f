"""The registry as the first SQLite code wrote it (runs, models, aliases).

Revision ID: 0001
Revises:
Create Date: 2026-11-29

A registry.db written before migrations existed has exactly these tables and no
version table; it is stamped with this revision and upgraded from here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("finished_at", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("git_commit", sa.Text),
        sa.Column("git_dirty", sa.Integer),
        sa.Column("versions", sa.Text),
        sa.Column("dataset_path", sa.Text),
        sa.Column("dataset_fingerprint", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("metrics", sa.Text),
        sa.Column("artifact_path", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("runs_dataset", "runs", ["dataset_fingerprint"])
    op.create_table(
        "models",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text),
        sa.Column("base_model", sa.Text),
        sa.Column("lineage", sa.Text),
        sa.Column("metrics", sa.Text),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("model_id", sa.Text, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("aliases")
    op.drop_table("models")
    op.drop_table("runs")
