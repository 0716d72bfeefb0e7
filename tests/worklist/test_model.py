"""The decision rules: which decision is open, and when a patient comes back as new."""

from __future__ import annotations

import datetime as dt

import pytest

from service.worklist.model import (
    STATES,
    Decision,
    DecisionState,
    Screened,
    current,
    open_decision,
    returns_as_new,
)

# A non-UTC offset: a decision made late in the evening in Nanjing is the next day in UTC.
NANJING = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)
AS_OF = dt.date(2026, 11, 27)


def decide(state: DecisionState, *, minutes: int = 0, **fields: object) -> Decision:
    return Decision(
        trial_id="NCT06946485",
        patient="Patient/p01",
        state=state,
        subject="coordinator-7",
        at=AT + dt.timedelta(minutes=minutes),
        **fields,  # type: ignore[arg-type]
    )


INELIGIBLE = Screened("ineligible", {"I6.hgb": "fail", "I1.age": "pass", "E3.preg": "unknown"})


def test_the_states_are_the_pre_screening_log() -> None:
    assert STATES == (
        "to_review",
        "contacted",
        "consented",
        "declined",
        "screen_failed",
        "enrolled",
        "not_now",
    )


def test_no_history_no_open_decision() -> None:
    assert open_decision([], AS_OF) is None


def test_the_latest_decision_is_the_open_one_whatever_order_they_come_in() -> None:
    first = decide("to_review", minutes=0)
    second = decide("contacted", minutes=5)
    third = decide("declined", minutes=10, note="not interested")
    assert open_decision([third, first, second], AS_OF) == third


def test_decisions_at_the_same_moment_are_ordered_as_recorded() -> None:
    earlier = decide("contacted", id=1)
    later = decide("enrolled", id=2)
    assert current([later, earlier]) == later


@pytest.mark.parametrize("state", ["to_review", "contacted", "consented", "declined", "enrolled"])
def test_other_decisions_stay_open_indefinitely(state: DecisionState) -> None:
    decision = decide(state)
    assert open_decision([decision], AS_OF + dt.timedelta(days=3650)) == decision


def test_not_now_is_open_until_the_day_before_its_date_and_lapses_on_it() -> None:
    until = dt.date(2027, 1, 15)
    decision = decide("not_now", until=until)
    assert open_decision([decision], until - dt.timedelta(days=1)) == decision
    assert open_decision([decision], until) is None
    assert open_decision([decision], until + dt.timedelta(days=1)) is None


def test_a_newer_decision_replaces_a_lapsed_not_now() -> None:
    lapsed = decide("not_now", until=AS_OF)
    newer = decide("contacted", minutes=1)
    assert open_decision([lapsed, newer], AS_OF) == newer


def test_not_now_returns_as_new_on_its_date_whatever_the_record_says() -> None:
    until = dt.date(2027, 1, 15)
    decision = decide("not_now", until=until)
    same = INELIGIBLE
    assert not returns_as_new(decision, same, same, until - dt.timedelta(days=1))
    assert returns_as_new(decision, same, same, until)
    assert returns_as_new(decision, None, None, until)


@pytest.mark.parametrize("state", ["declined", "screen_failed"])
def test_declined_or_screen_failed_stay_out_while_nothing_relevant_changed(
    state: DecisionState,
) -> None:
    decision = decide(state, criterion="I6.hgb" if state == "screen_failed" else None)
    # An unknown criterion became a fail, the score moved: nothing that favours the patient.
    later = Screened("ineligible", {"I6.hgb": "fail", "I1.age": "pass", "E3.preg": "fail"})
    assert not returns_as_new(decision, INELIGIBLE, INELIGIBLE, AS_OF)
    assert not returns_as_new(decision, INELIGIBLE, later, AS_OF)


@pytest.mark.parametrize("state", ["declined", "screen_failed"])
def test_declined_or_screen_failed_return_when_a_failed_criterion_now_passes(
    state: DecisionState,
) -> None:
    decision = decide(state, criterion="E3.preg" if state == "screen_failed" else None)
    # Still ineligible on another criterion: the failed one passing is relevant all the same.
    before = Screened("ineligible", {"I6.hgb": "fail", "I2.sle": "fail"})
    after = Screened("ineligible", {"I6.hgb": "pass", "I2.sle": "fail"})
    assert returns_as_new(decision, before, after, AS_OF)


@pytest.mark.parametrize(
    ("before", "after", "rose"),
    [
        ("ineligible", "possibly_eligible", True),
        ("ineligible", "likely_eligible", True),
        ("possibly_eligible", "likely_eligible", True),
        ("possibly_eligible", "possibly_eligible", False),
        ("likely_eligible", "possibly_eligible", False),
        ("possibly_eligible", "ineligible", False),
    ],
)
def test_declined_returns_when_the_status_rose(before: str, after: str, rose: bool) -> None:
    decision = decide("declined")
    verdicts = {"I1.age": "pass"}
    earlier, later = Screened(before, verdicts), Screened(after, verdicts)
    assert returns_as_new(decision, earlier, later, AS_OF) is rose


def test_screen_failed_returns_when_its_criterion_now_passes_where_it_did_not() -> None:
    # Failed by the coordinator on a criterion the engine could not decide.
    decision = decide("screen_failed", criterion="E3.preg", note="pregnancy test positive")
    after = Screened("ineligible", {"I6.hgb": "fail", "I1.age": "pass", "E3.preg": "pass"})
    assert returns_as_new(decision, INELIGIBLE, after, AS_OF)


def test_screen_failed_on_a_criterion_the_engine_passed_stays_out_while_it_still_passes() -> None:
    # The coordinator knew better than the record: the engine's pass is not news.
    decision = decide("screen_failed", criterion="I1.age", note="age misrecorded")
    assert not returns_as_new(decision, INELIGIBLE, INELIGIBLE, AS_OF)


@pytest.mark.parametrize("state", ["declined", "screen_failed"])
def test_without_both_screens_nothing_is_known_to_have_changed(state: DecisionState) -> None:
    decision = decide(state, criterion="I6.hgb" if state == "screen_failed" else None)
    likely = Screened("likely_eligible", {"I6.hgb": "pass"})
    assert not returns_as_new(decision, None, likely, AS_OF)
    assert not returns_as_new(decision, INELIGIBLE, None, AS_OF)


@pytest.mark.parametrize("state", ["to_review", "contacted", "consented", "enrolled"])
def test_patients_being_worked_on_never_return_as_new(state: DecisionState) -> None:
    decision = decide(state)
    likely = Screened("likely_eligible", {"I6.hgb": "pass", "I1.age": "pass"})
    assert not returns_as_new(decision, INELIGIBLE, likely, AS_OF)
