"""`upgrade head` of the one Alembic history, as every store does when it opens the database.

The history (service/db/migrations) holds every table: sweeps (0001, 0002) and the audit,
SMART and CDS tables (0003, which adopts them where today's `create_all` already made them),
the worklist's decisions (0004) and what it knows of the ResearchSubjects it writes (0005).
Its version table is `cohort_match_alembic_version`: named for the application, so it never
meets another application's Alembic history in a shared PostgreSQL database. A database
whose history was the sweeps' alone (version table `sweeps_alembic_version`) has that table
renamed on the way.

Upgrades run in one write transaction holding a lock (PostgreSQL advisory lock, SQLite
BEGIN IMMEDIATE), so processes starting at once do not race; an engine that was upgraded in
this process is not upgraded again.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from service.db.base import Base
from service.db.engine import write_transaction

__all__ = ["LEGACY_VERSION_TABLE", "MIGRATIONS", "VERSION_TABLE", "metadata", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "cohort_match_alembic_version"
LEGACY_VERSION_TABLE = "sweeps_alembic_version"  # before the audit/SMART/CDS tables joined
# pg_advisory_xact_lock key: the sweeps' key ("swee"), kept so that an older process
# migrating the same database at the same time waits for us and we for it.
MIGRATION_LOCK = 0x73776565

_upgraded: weakref.WeakSet[Engine] = weakref.WeakSet()


def metadata() -> MetaData:
    """Every table of the service (for autogenerate and the schema tests): the models are
    declared beside their stores, so importing those modules registers them on `Base`."""
    import service.audit
    import service.cds.store
    import service.smart.store
    import service.sweeps.tables
    import service.worklist.store
    import service.worklist.subjects  # noqa: F401

    return Base.metadata


def upgrade(engine: Engine, *, again: bool = False) -> None:
    """Bring the database to the newest revision (`again`: even if done here before)."""
    if engine in _upgraded and not again:
        return
    from alembic import command
    from alembic.config import Config

    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        _adopt_legacy_version_table(conn)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    _upgraded.add(engine)


def _adopt_legacy_version_table(conn: Connection) -> None:
    tables = set(inspect(conn).get_table_names())
    if LEGACY_VERSION_TABLE in tables and VERSION_TABLE not in tables:
        conn.execute(text(f"ALTER TABLE {LEGACY_VERSION_TABLE} RENAME TO {VERSION_TABLE}"))
