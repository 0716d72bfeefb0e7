"""Alembic environment for the sweeps tables. Run only through `SweepStore.migrate()`, which
passes an open connection (already in a transaction, holding the migration lock)."""

from __future__ import annotations

from alembic import context

from service.sweeps.store import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
