"""One Alembic history for every table: a database of today's schema is upgraded in place
(nothing lost), a fresh one is created whole, by whichever store opens it first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from service.audit import AuditStore
from service.cds.store import CdsStore
from service.db import create_engine
from service.db.migrate import LEGACY_VERSION_TABLE, VERSION_TABLE, upgrade
from service.smart.store import SessionStore
from service.sweeps.store import SweepStore
from tests.db.legacy_schema import (
    HEAD,
    TABLES,
    assert_upgraded_in_place,
    create_todays_database,
    schema_differences,
)


def test_a_database_of_todays_schema_is_upgraded_in_place_and_keeps_every_row(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'today.db'}"
    old = sqlalchemy.create_engine(url)  # as today's audit store made its engine
    create_todays_database(old)
    old.dispose()
    engine = create_engine(url)
    try:
        assert_upgraded_in_place(engine)
    finally:
        engine.dispose()


STORES: dict[str, Callable[[Engine], object]] = {
    "audit": AuditStore,
    "smart": SessionStore,
    "cds": CdsStore,
    "sweeps": SweepStore,
}


@pytest.mark.parametrize("store", STORES)
def test_whichever_store_opens_a_fresh_database_creates_every_table(
    tmp_path: Path, store: str
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        STORES[store](engine)
        assert set(TABLES) | {VERSION_TABLE} <= set(inspect(engine).get_table_names())
        assert LEGACY_VERSION_TABLE not in inspect(engine).get_table_names()
        assert schema_differences(engine) == []
        with engine.connect() as conn:
            assert conn.scalar(text(f"select version_num from {VERSION_TABLE}")) == HEAD  # noqa: S608
    finally:
        engine.dispose()


def test_an_engine_is_upgraded_once_per_process_unless_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command

    calls: list[str] = []
    real = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda *a, **k: (calls.append("up"), real(*a, **k)))
    engine = create_engine(f"sqlite:///{tmp_path / 'once.db'}")
    try:
        AuditStore(engine)
        SessionStore(engine)
        CdsStore(engine)
        SweepStore(engine)
        assert calls == ["up"]
        upgrade(engine, again=True)
        assert calls == ["up", "up"]
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
