"""Registered models record a checksum of their files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

``models.checksum``: ``sha256:<hex>`` over the sorted manifest of the model
directory's files (cluster/registry/artifacts.py ``dir_checksum``), recorded when the model
is registered. A node that downloads a model from the artifact store (an S3 URI
in ``models.path``) verifies its copy against it before loading anything. NULL on
models registered before this revision. A plain ADD COLUMN: no table is copied,
so ``runs_immutable`` is untouched.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("models", sa.Column("checksum", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("checksum")
