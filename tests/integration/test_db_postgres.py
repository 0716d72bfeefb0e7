"""The one Alembic history on the real PostgreSQL (127.0.0.1:5432, database `test`): a
database of today's schema is upgraded in place, nothing lost; a fresh one is created whole.

Each test gets its own schema (search_path in the URL) and drops it afterwards.
"""

from __future__ import annotations

import pytest
import sqlalchemy
from sqlalchemy import inspect, text

from service.db import create_engine
from service.db.migrate import VERSION_TABLE, upgrade
from tests.db.legacy_schema import (
    HEAD,
    TABLES,
    assert_upgraded_in_place,
    create_todays_database,
    schema_differences,
)

pytestmark = pytest.mark.integration


def test_a_database_of_todays_schema_is_upgraded_in_place_on_postgresql(pg_url: str) -> None:
    old = sqlalchemy.create_engine(pg_url, pool_pre_ping=True)  # as today's audit store's
    create_todays_database(old)
    old.dispose()
    engine = create_engine(pg_url)
    try:
        assert_upgraded_in_place(engine)
    finally:
        engine.dispose()


def test_a_fresh_postgresql_database_gets_every_table(pg_url: str) -> None:
    engine = create_engine(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
        upgrade(engine)
        assert {VERSION_TABLE, *TABLES} <= set(inspect(engine).get_table_names())
        assert schema_differences(engine) == []
        with engine.connect() as conn:
            assert conn.scalar(text(f"select version_num from {VERSION_TABLE}")) == HEAD  # noqa: S608
    finally:
        engine.dispose()
