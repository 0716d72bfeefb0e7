"""The one engine factory: every store of a process shares the engine built here.

    create_engine(url)  SQLite (the default, a file) or PostgreSQL (psycopg 3)
    writing(engine)     the same engine, its transactions taking SQLite's write lock up front

SQLite: WAL lets readers (the API, the pages) read while a sweep writes; `busy_timeout` makes
writers queue instead of failing; foreign keys are enforced; and we emit BEGIN ourselves
(SQLAlchemy's documented pysqlite recipe), because pysqlite defers BEGIN and cannot do
BEGIN IMMEDIATE. A write transaction that reads first (claim a sweep, take a SMART launch)
must start IMMEDIATE: a deferred one that read before another writer committed cannot write
at all in WAL mode (SQLITE_BUSY_SNAPSHOT, which busy_timeout does not wait out).

PostgreSQL: `postgresql://` means psycopg 3 (the driver we install), as
`postgresql+psycopg://` does.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

__all__ = ["BUSY_TIMEOUT_MS", "create_engine", "write_transaction", "writing"]

BUSY_TIMEOUT_MS = 30_000
IMMEDIATE = "sqlite_immediate"  # execution option read by the SQLite BEGIN hook


def create_engine(url: str) -> Engine:
    """The engine for `url`: pooled, pinged before use, JSON columns through orjson."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sqlalchemy.create_engine(
        parsed,
        pool_pre_ping=True,
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
    )
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    return engine


def writing(engine: Engine) -> Engine:
    """`engine` (same pool) whose transactions begin IMMEDIATE on SQLite; for ORM sessions
    that write."""
    return engine.execution_options(**{IMMEDIATE: True})


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction (BEGIN IMMEDIATE on SQLite), committed when the block ends."""
    with engine.connect() as conn:
        conn.execution_options(**{IMMEDIATE: True})
        with conn.begin():
            yield conn


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Switching a fresh file to WAL needs it to itself, and SQLite does not always wait
        # for that (busy_timeout notwithstanding) when several connections open at once.
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
