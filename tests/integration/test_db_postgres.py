"""The one Alembic history on the real PostgreSQL (127.0.0.1:5432, database `test`): a
database of today's schema is upgraded in place, nothing lost; a fresh one is created whole.

Each test gets its own schema (search_path in the URL) and drops it afterwards.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy
from sqlalchemy import inspect, text

from service.db import create_engine
from service.db.migrate import VERSION_TABLE, upgrade
from service.worklist.subjects import SubjectStore
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


def test_research_subject_records_on_postgresql(pg_url: str) -> None:
    """The research_subjects table (0005): rows added and updated in place, times in UTC."""
    engine = create_engine(pg_url)
    try:
        store = SubjectStore(engine)
        at = dt.datetime(2026, 11, 27, 21, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
        store.statuses("T-1", {"Patient/p01": "candidate"}, {"Patient/p01": "sweep"}, at)
        store.outcome("T-1", "Patient/p01", 4, "written", at, status="on-study")
        store.outcome("T-1", "Patient/p02", 5, "failed", at, detail="503")
        assert store.known("T-1") == {"Patient/p01": "on-study"}
        row = store.get("T-1", "Patient/p01")
        assert row is not None
        assert (row.source, row.decision_id, row.outcome) == ("decision", 4, "written")
        assert row.status_at == at.astimezone(dt.UTC)
        failed = store.get("T-1", "Patient/p02")
        assert failed is not None
        assert (failed.status, failed.outcome, failed.detail) == (None, "failed", "503")
    finally:
        engine.dispose()
