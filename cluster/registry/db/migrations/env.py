"""Alembic environment: always online, on the connection (and transaction) the caller opened.

evalcluster drives Alembic from Python (cluster/registry/db/migrate.py), so no alembic.ini
is needed: the caller puts its connection in ``config.attributes["connection"]``.
"""

from alembic import context

from cluster.registry.db.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "evalcluster migrations run through `evalctl db upgrade` (cluster/registry/db/migrate.py)"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite changes constraints by copying the table (Alembic batch mode)
)
with context.begin_transaction():
    context.run_migrations()
