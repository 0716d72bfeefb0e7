"""Decisions a coordinator records for a patient and a trial, and the rules that carry them
across sweeps. Pure: no I/O, no clock (`as_of` and `at` are passed in).

A patient's decisions for a trial are a history, never edited: the current decision is the
latest one recorded. The states follow a site's pre-screening log:

    to_review      put on the coordinator's list
    contacted      the patient (or their clinician) was approached
    consented      the patient signed the study's consent; not yet enrolled
    declined       the patient said no
    screen_failed  out on a criterion (its id, with a note), whatever the engine said
    enrolled       on study
    not_now        not before a date (`until`)

An open decision takes the patient out of the new candidates. It stays open until a newer one
replaces it, except that `not_now` lapses on its date, and `declined` and `screen_failed` give
way when something relevant changed since they were made (`returns_as_new`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from service.ranking import STATUS_ORDER

__all__ = ["STATES", "Decision", "DecisionState", "Screened", "open_decision", "returns_as_new"]

DecisionState = Literal[
    "to_review", "contacted", "consented", "declined", "screen_failed", "enrolled", "not_now"
]
STATES: tuple[DecisionState, ...] = get_args(DecisionState)
# Decisions that hold the patient out only as long as their record says the same.
RECONSIDERED: frozenset[str] = frozenset({"declined", "screen_failed"})


@dataclass(frozen=True)
class Screened:
    """What a screen said about the patient: the status and each criterion's verdict (a
    `PatientResult` or a stored sweep result, reduced to what the rules compare)."""

    status: str
    verdicts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """One recorded decision: what, for whom, who made it, when and why.

    `basis` is the screen the decision was made on (the patient's result in the trial's
    latest sweep when it was recorded), None when there was none."""

    trial_id: str
    patient: str  # "Patient/<id>"
    state: DecisionState
    subject: str  # who: the caller's token subject
    at: dt.datetime  # when: the app clock, aware
    note: str | None = None  # why
    criterion: str | None = None  # screen_failed: the criterion failed
    until: dt.date | None = None  # not_now: the date the patient returns
    client_id: str | None = None
    basis: Screened | None = None
    id: int | None = None  # the store's row id, ascending in recording order


def current(decisions: Iterable[Decision]) -> Decision | None:
    """The latest of `decisions` (by time, then by the order they were recorded)."""
    return max(decisions, key=lambda d: (d.at, d.id or 0), default=None)


def open_decision(decisions: Iterable[Decision], as_of: dt.date) -> Decision | None:
    """The decision that holds the patient out of the new candidates on `as_of`: the current
    (latest) one, unless it is `not_now` and its date has come (it returns *on* its date).

    Whether a `declined` or `screen_failed` patient's record has changed enough to bring them
    back is `returns_as_new`'s question: it needs the screens, this only the history."""
    decision = current(decisions)
    if decision is None:
        return None
    if decision.state == "not_now" and decision.until is not None and decision.until <= as_of:
        return None
    return decision


def returns_as_new(
    decision: Decision,
    previous_result: Screened | None,
    current_result: Screened | None,
    as_of: dt.date,
) -> bool:
    """Whether the patient comes back as a new candidate despite `decision`.

    - not_now: on and after its date, whatever the record says.
    - declined, screen_failed: only when something relevant changed from `previous_result`
      (the screen the decision was made on) to `current_result`: their status rose
      (ineligible -> possibly -> likely), or a criterion that failed now passes; for
      screen_failed also the criterion they were failed on now passes where it did not.
      Without both screens nothing is known to have changed, and the decision stands.
    - to_review, contacted, consented, enrolled: never; the patient is already being worked on.
    """
    if decision.state == "not_now":
        return decision.until is not None and decision.until <= as_of
    if decision.state not in RECONSIDERED or previous_result is None or current_result is None:
        return False
    before, after = previous_result, current_result
    if STATUS_ORDER.get(after.status, 99) < STATUS_ORDER.get(before.status, 99):
        return True
    if any(v == "fail" and after.verdicts.get(c) == "pass" for c, v in before.verdicts.items()):
        return True
    failed_on = decision.criterion
    return (
        decision.state == "screen_failed"
        and failed_on is not None
        and after.verdicts.get(failed_on) == "pass"
        and before.verdicts.get(failed_on) != "pass"
    )
