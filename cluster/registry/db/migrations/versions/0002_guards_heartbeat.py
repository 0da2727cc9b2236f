"""The database enforces the run record's rules; runs get an owner process and a heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- ``runs.status`` is one of running / finished / failed (CHECK), and
  ``finished_at`` is set exactly when the run has ended (CHECK);
- a trigger refuses any UPDATE of a finished or failed run, so not even raw SQL
  rewrites a final record (the code's own UPDATEs only match running rows);
- ``host``, ``pid``, ``heartbeat_at``: the process that owns a running run and
  when it was last seen alive (``evalctl runs list`` shows stale runs);
- indexes for the listing order and the status filter.

SQLite has no ALTER TABLE ... ADD CONSTRAINT: Alembic's batch mode copies the
table. A later revision that copies ``runs`` that way drops the trigger with the
old table and must create it again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FINAL = "run record is final: finished and failed runs are immutable"

SQLITE_TRIGGER = f"""
CREATE TRIGGER runs_immutable BEFORE UPDATE ON runs
WHEN OLD.status <> 'running'
BEGIN
  SELECT RAISE(ABORT, '{FINAL}');
END
"""

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION evalcluster_runs_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'running' THEN
    RAISE EXCEPTION '{FINAL} (run %, %)', OLD.id, OLD.status
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END
$$
"""

PG_TRIGGER = """
CREATE TRIGGER runs_immutable BEFORE UPDATE ON runs
FOR EACH ROW EXECUTE FUNCTION evalcluster_runs_immutable()
"""


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("id", existing_type=sa.Text, nullable=False)  # SQLite let a TEXT key be NULL
        batch.add_column(sa.Column("host", sa.Text))
        batch.add_column(sa.Column("pid", sa.Integer))
        batch.add_column(sa.Column("heartbeat_at", sa.Text))
        batch.create_check_constraint("ck_runs_status", "status IN ('running', 'finished', 'failed')")
        batch.create_check_constraint(
            "ck_runs_finished_at",
            "(status = 'running' AND finished_at IS NULL)"
            " OR (status <> 'running' AND finished_at IS NOT NULL)",
        )
    op.create_index("runs_created", "runs", ["created_at", "id"])
    op.create_index("runs_status", "runs", ["status"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS runs_immutable"
        + (" ON runs" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS evalcluster_runs_immutable()")
    op.drop_index("runs_status", "runs")
    op.drop_index("runs_created", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("ck_runs_finished_at", type_="check")
        batch.drop_constraint("ck_runs_status", type_="check")
        batch.drop_column("heartbeat_at")
        batch.drop_column("pid")
        batch.drop_column("host")
