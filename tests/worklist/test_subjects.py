"""The research_subjects table: one row per trial and patient, updated in place, in the one
migration history (revision 0005, upgrading a 0004 database in place)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from service.db import create_engine
from service.db.migrate import MIGRATIONS, VERSION_TABLE
from service.worklist.store import DecisionStore
from service.worklist.subjects import SubjectStore
from tests.db.legacy_schema import HEAD, schema_differences

TRIAL = "NCT06946485"
NANJING = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'subjects.db'}")
    yield engine
    engine.dispose()


def test_the_store_migrates_its_table_into_the_one_history(engine: Engine) -> None:
    SubjectStore(engine)
    assert "research_subjects" in inspect(engine).get_table_names()
    assert schema_differences(engine) == []


def test_a_0004_database_is_upgraded_in_place_keeping_its_decisions(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        conn.execute(
            text(
                "INSERT INTO decisions (trial_id, patient, state, subject, at) "
                "VALUES ('NCT06946485', 'Patient/p01', 'contacted', 'coordinator-7', "
                "'2026-11-27 13:30:00')"
            )
        )
    assert "research_subjects" not in inspect(engine).get_table_names()
    SubjectStore(engine)  # upgrades to head
    with engine.connect() as conn:
        assert conn.scalar(text(f"select version_num from {VERSION_TABLE}")) == HEAD  # noqa: S608
    assert HEAD == "0005"
    [kept] = DecisionStore(engine).history(TRIAL, "Patient/p01")
    assert (kept.state, kept.subject) == ("contacted", "coordinator-7")
    assert schema_differences(engine) == []


def test_statuses_are_kept_per_patient_and_updated_in_place(engine: Engine) -> None:
    store = SubjectStore(engine)
    store.statuses(TRIAL, {"Patient/p01": "candidate"}, {"Patient/p01": "sweep"}, AT)
    store.statuses(
        TRIAL,
        {"Patient/p01": "on-study", "Patient/p02": "candidate"},
        {"Patient/p01": "decision", "Patient/p02": "sweep"},
        AT + dt.timedelta(hours=1),
        {"Patient/p01": 7},
    )
    store.statuses("OTHER", {"Patient/p01": "screening"}, {"Patient/p01": "ehr"}, AT)
    assert store.known(TRIAL) == {"Patient/p01": "on-study", "Patient/p02": "candidate"}
    row = store.get(TRIAL, "Patient/p01")
    assert row is not None
    assert (row.status, row.source, row.decision_id, row.outcome) == (
        "on-study",
        "decision",
        7,
        "written",
    )
    assert row.status_at == (AT + dt.timedelta(hours=1)).astimezone(dt.UTC)
    assert store.get(TRIAL, "Patient/p03") is None


def test_a_failed_write_back_keeps_the_status_last_written(engine: Engine) -> None:
    store = SubjectStore(engine)
    store.statuses(TRIAL, {"Patient/p01": "candidate"}, {"Patient/p01": "sweep"}, AT)
    store.outcome(TRIAL, "Patient/p01", 3, "failed", AT, detail="x" * 5000)
    row = store.get(TRIAL, "Patient/p01")
    assert row is not None
    assert (row.status, row.outcome, row.decision_id) == ("candidate", "failed", 3)
    assert row.detail is not None
    assert len(row.detail) == 1000
    store.failed_again(TRIAL, {"Patient/p01": 4}, "the FHIR server answered 500")
    row = store.get(TRIAL, "Patient/p01")
    assert row is not None
    assert (row.decision_id, row.outcome, row.detail) == (
        4,
        "failed",
        "the FHIR server answered 500",
    )
    store.outcome(TRIAL, "Patient/p01", 4, "written", AT, status="screening")
    assert store.known(TRIAL) == {"Patient/p01": "screening"}
    row = store.get(TRIAL, "Patient/p01")
    assert row is not None
    assert (row.source, row.outcome, row.detail) == ("decision", "written", None)
    store.outcome(TRIAL, "Patient/p02", 5, "off", AT)
    assert store.known(TRIAL) == {"Patient/p01": "screening"}  # off: nothing written


def test_a_sweeps_worth_of_patients_is_written_in_one_call(engine: Engine) -> None:
    store = SubjectStore(engine)
    many = {f"Patient/p{i:05d}": "candidate" for i in range(1, 1202)}  # over two IN lists
    store.statuses(TRIAL, many, dict.fromkeys(many, "sweep"), AT)
    store.statuses(TRIAL, many | {"Patient/p00001": "ineligible"}, dict.fromkeys(many, "sweep"), AT)
    known = store.known(TRIAL)
    assert len(known) == 1201
    assert known["Patient/p00001"] == "ineligible"
