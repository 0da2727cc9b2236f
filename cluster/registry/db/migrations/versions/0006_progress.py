"""A running run records how far it got, with its heartbeat.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

``runs.progress``: JSON text ``{"done": int, "total": int | null, "unit": "rows" | "trials" |
"steps"}`` (cluster/registry/progress.py), written by the run's heartbeat (no write of its own)
and kept as it last was when the run finished or failed. NULL on runs recorded before this
revision and on runs that never said. A plain ADD COLUMN: no table is copied, so
``runs_immutable`` is untouched (the downgrade drops the column in place too: SQLite >= 3.35).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("progress", sa.Text))


def downgrade() -> None:
    # Not batch mode: on SQLite that copies ``runs`` and loses its trigger (revision 0002).
    op.execute("ALTER TABLE runs DROP COLUMN progress")
