"""The decisions table: append-only history, on the shared engine, in the one migration
history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from service.db import create_engine
from service.worklist.model import Decision, Screened
from service.worklist.store import NOTE_MAX, DecisionStore
from tests.db.legacy_schema import schema_differences

NANJING = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'decisions.db'}")
    yield engine
    engine.dispose()


def decision(state: str = "to_review", patient: str = "Patient/p01", **fields: object) -> Decision:
    values: dict[str, object] = {
        "trial_id": "NCT06946485",
        "patient": patient,
        "state": state,
        "subject": "coordinator-7",
        "at": AT,
    }
    values.update(fields)
    return Decision(**values)  # type: ignore[arg-type]


def test_the_store_migrates_its_table_into_the_one_history(engine: Engine) -> None:
    DecisionStore(engine)
    assert "decisions" in inspect(engine).get_table_names()
    assert schema_differences(engine) == []


def test_every_decision_is_kept_in_the_order_recorded(engine: Engine) -> None:
    store = DecisionStore(engine)
    first = store.record(decision("to_review"))
    second = store.record(decision("contacted", at=AT + dt.timedelta(hours=1)))
    third = store.record(
        decision(
            "screen_failed",
            at=AT + dt.timedelta(days=2),
            criterion="I6.hgb",
            note="Hb 55 g/L on repeat",
            basis=Screened("possibly_eligible", {"I6.hgb": "unknown"}),
        )
    )
    store.record(decision("declined", patient="Patient/p02"))
    history = store.history("NCT06946485", "Patient/p01")
    assert [d.state for d in history] == ["to_review", "contacted", "screen_failed"]
    assert [d.id for d in history] == [first.id, second.id, third.id]
    assert history[-1] == third
    assert history[-1].basis == Screened("possibly_eligible", {"I6.hgb": "unknown"})
    # The moment is the same instant, given back in UTC.
    assert history[0].at == AT
    assert history[0].at.utcoffset() == dt.timedelta(0)
    assert store.history("other-trial", "Patient/p01") == []


def test_by_patient_groups_a_trials_histories(engine: Engine) -> None:
    store = DecisionStore(engine)
    store.record(decision("to_review"))
    store.record(decision("not_now", patient="Patient/p02", until=dt.date(2027, 1, 15)))
    store.record(decision("contacted", at=AT + dt.timedelta(minutes=1)))
    histories = store.by_patient("NCT06946485")
    assert {p: [d.state for d in h] for p, h in histories.items()} == {
        "Patient/p01": ["to_review", "contacted"],
        "Patient/p02": ["not_now"],
    }
    assert histories["Patient/p02"][0].until == dt.date(2027, 1, 15)


def test_a_long_note_is_cut_and_a_naive_time_refused(engine: Engine) -> None:
    store = DecisionStore(engine)
    kept = store.record(decision("declined", note="x" * (NOTE_MAX + 10)))
    assert kept.note == "x" * NOTE_MAX
    with pytest.raises(ValueError, match="aware"):
        store.record(decision(at=AT.replace(tzinfo=None)))
