"""The persistence layer every store shares: one engine factory, one declarative base, one
Alembic history.

    engine.py      create_engine(url): SQLite (WAL, busy timeout) or PostgreSQL (psycopg)
    base.py        Base: the declarative base of every table
    migrate.py     upgrade(engine): Alembic `upgrade head`, serialized across processes
    migrations/    the history: sweeps (0001, 0002), audit + SMART + CDS (0003),
                   decisions (0004), research_subjects (0005)

Tables stay beside their store (service/audit.py, service/smart/store.py, service/cds/store.py,
service/sweeps/tables.py, service/worklist/store.py, service/worklist/subjects.py);
`create_all` is for tests only.
"""

from service.db.base import Base
from service.db.engine import create_engine, write_transaction, writing

__all__ = ["Base", "create_engine", "write_transaction", "writing"]
