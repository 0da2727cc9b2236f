"""A run's outputs overwritten by a later run in the same --out directory.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``overwrites``: one row per run whose artifact directory a later run (``by_run``) overwrote with
``--overwrite`` (the earlier run's files are gone, or are the later run's). A finished run's own
row stays as it was: runs are immutable once ended (revision 0002's trigger), so the fact is a
row here, and `runs show`, `report`, `compare` and `gate` look it up. A new table: ``runs`` is
not copied, so ``runs_immutable`` is untouched.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "overwrites",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("by_run", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("overwrites")
