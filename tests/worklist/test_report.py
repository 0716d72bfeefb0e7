"""The recruitment report: each count, from built decisions and sweep summaries, in a
non-UTC zone (a decision late in the evening in Nanjing is the previous day in UTC)."""

from __future__ import annotations

import datetime as dt

import pytest

from service.worklist.model import STATES, Decision, DecisionState
from service.worklist.report import RecruitmentReport, SweepSummary, funnel, recruitment_report

NANJING = dt.timezone(dt.timedelta(hours=8))
TRIAL = "NCT06946485"
START, END = dt.date(2026, 11, 1), dt.date(2026, 11, 30)


def at(day: int, hour: int = 10, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, 0, tzinfo=NANJING)


def decide(
    patient: str,
    state: DecisionState,
    when: dt.datetime,
    *,
    criterion: str | None = None,
    trial: str = TRIAL,
) -> Decision:
    return Decision(
        trial_id=trial,
        patient=f"Patient/{patient}",
        state=state,
        subject="coordinator-7",
        at=when,
        criterion=criterion,
    )


def sweep(
    run_id: int, ended: dt.datetime, patients: int, likely: int, possibly: int
) -> SweepSummary:
    return SweepSummary(run_id, ended, patients, likely, possibly)


def report(
    decisions: list[Decision], sweeps: list[SweepSummary] | None = None
) -> RecruitmentReport:
    return recruitment_report(TRIAL, START, END, decisions, sweeps or [], NANJING)


def test_screened_and_candidates_come_from_the_latest_sweep_ended_in_the_period() -> None:
    sweeps = [
        sweep(1, at(2), 100, 5, 10),
        sweep(3, at(20), 120, 7, 12),  # the latest in the period
        sweep(4, at(1, month=12), 999, 99, 99),  # after the period
        sweep(2, at(10), 110, 6, 11),
    ]
    result = report([], sweeps)
    assert (result.sweep, result.screened, result.candidates) == (3, 120, 19)


def test_a_sweep_ending_late_in_the_evening_counts_on_that_day_in_the_zone() -> None:
    # 2026-12-01 07:30 in Nanjing is 2026-11-30 23:30 UTC: outside the period in the zone.
    late = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC)
    result = report([], [sweep(1, at(5), 50, 1, 2), sweep(2, late, 60, 3, 4)])
    assert (result.sweep, result.screened) == (1, 50)


def test_without_a_sweep_in_the_period_the_engine_counts_are_zero() -> None:
    result = report([], [sweep(1, at(31, month=10), 100, 5, 10)])
    assert (result.sweep, result.screened, result.candidates) == (None, 0, 0)


def test_reviewed_counts_patients_with_any_decision_in_the_period_once() -> None:
    decisions = [
        decide("p01", "to_review", at(3)),
        decide("p01", "contacted", at(4)),
        decide("p02", "to_review", at(5)),
        decide("p03", "contacted", at(31, month=10)),  # before the period
        decide("p04", "contacted", at(5), trial="OTHER"),  # another trial
    ]
    assert report(decisions).reviewed == 2


@pytest.mark.parametrize("state", ["contacted", "consented", "declined", "enrolled", "to_review"])
def test_each_state_counts_patients_whose_latest_decision_in_the_period_it_is(
    state: DecisionState,
) -> None:
    decisions = [
        decide("p01", "to_review", at(2)),
        decide("p01", state, at(3)),
        decide("p02", state, at(4)),
        decide("p03", state, at(5)),
        decide("p03", "not_now", at(6)),  # superseded: counted as not_now
        decide("p04", "not_now", at(1, month=12)),  # after the period: p04 stays `state`
        decide("p04", state, at(7)),
    ]
    result = report(decisions)
    assert result.states[state] == 3
    assert result.states["not_now"] == 1
    assert sum(result.states.values()) == result.reviewed == 4
    assert set(result.states) == set(STATES)


def test_an_enrolled_patient_is_not_counted_as_contacted_as_well() -> None:
    result = report([decide("p01", "contacted", at(2)), decide("p01", "enrolled", at(9))])
    assert (result.states["contacted"], result.states["enrolled"]) == (0, 1)


def test_a_consented_patient_counts_once_between_contacted_and_enrolled() -> None:
    result = report(
        [
            decide("p01", "contacted", at(2)),
            decide("p01", "consented", at(5)),
            decide("p02", "consented", at(3)),
            decide("p02", "enrolled", at(9)),
        ]
    )
    states = result.states
    assert (states["contacted"], states["consented"], states["enrolled"]) == (0, 1, 1)
    assert result.reviewed == 2


def test_screen_failed_counts_by_the_criterion_of_the_latest_decision() -> None:
    decisions = [
        decide("p01", "screen_failed", at(2), criterion="I6.hgb"),
        decide("p02", "screen_failed", at(3), criterion="I6.hgb"),
        decide("p03", "screen_failed", at(3), criterion="I1.age"),
        decide("p04", "screen_failed", at(2), criterion="E3.preg"),
        decide("p04", "contacted", at(8)),  # no longer screen-failed
        decide("p05", "screen_failed", at(4)),  # no criterion recorded
    ]
    result = report(decisions)
    assert result.states["screen_failed"] == 4
    assert result.screen_failed_by_reason == {"I1.age": 1, "I6.hgb": 2, "unspecified": 1}


def test_a_decision_late_in_the_evening_counts_on_that_day_in_the_zone() -> None:
    # 23:30 on 30 November in Nanjing is 15:30 UTC: in the period; 1 December 00:30 is not.
    decisions = [
        decide("p01", "declined", dt.datetime(2026, 11, 30, 23, 30, tzinfo=NANJING)),
        decide("p02", "declined", dt.datetime(2026, 11, 30, 16, 30, tzinfo=dt.UTC)),
    ]
    result = report(decisions)
    assert (result.reviewed, result.states["declined"]) == (1, 1)


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        recruitment_report(TRIAL, END, START, [], [], NANJING)


def test_the_funnel_runs_from_the_engine_to_enrolment() -> None:
    decisions = [
        decide("p01", "contacted", at(2)),
        decide("p02", "enrolled", at(3)),
        decide("p03", "to_review", at(3)),
        decide("p04", "contacted", at(3)),
        decide("p04", "consented", at(4)),
    ]
    result = report(decisions, [sweep(1, at(1), 40, 3, 4)])
    assert funnel(result) == [
        ("Screened by the engine", 40),
        ("Candidates", 7),
        ("Reviewed", 4),
        ("Contacted", 1),
        ("Consented", 1),
        ("Enrolled", 1),
    ]
