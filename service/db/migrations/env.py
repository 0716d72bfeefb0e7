"""Alembic environment of the whole database. Run only through `service.db.migrate.upgrade`,
which passes an open connection (already in a transaction, holding the migration lock)."""

from __future__ import annotations

from alembic import context

from service.db.migrate import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata(),
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
