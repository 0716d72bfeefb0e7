"""Verdicts -> status, score and order.

- status: `ineligible` with any `fail`, or when the patient is no candidate whatever the
  criteria say (deceased on or before `as_of`: `excluded` gives the reason); `likely_eligible`
  when every criterion that is not `manual` is `pass` or `not_applicable`; otherwise
  `possibly_eligible`.
- score (0-1): the share of the trial's automatic screening effort already settled, each
  criterion weighted by its `cost` in the trial file. Unknown manual criteria cost nothing
  (every candidate has them). 1.0 means nothing left to check before the screening visit.
  An ineligible patient scores 0.
- order: status (likely, possibly, ineligible), then score, then fewer failed criteria,
  then the patient reference, so the same data always gives the same list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.criteria.model import TrialDefinition
from service.criteria.verdict import CriterionResult, PatientResult, Status

STATUS_ORDER: dict[str, int] = {"likely_eligible": 0, "possibly_eligible": 1, "ineligible": 2}


def rank_fields(
    trial: TrialDefinition, results: Sequence[CriterionResult], excluded: str | None = None
) -> tuple[Status, float, list[str]]:
    if excluded is not None:
        return "ineligible", 0.0, []  # nothing to check: the patient is no candidate
    costs = {criterion.id: criterion.cost for criterion in trial.criteria}
    verdicts = [r.verdict for r in results]
    automatic = [r for r in results if r.assessment == "automatic"]
    status: Status
    if "fail" in verdicts:
        status = "ineligible"
    elif all(r.verdict in ("pass", "not_applicable") for r in automatic):
        status = "likely_eligible"
    else:
        status = "possibly_eligible"
    total = sum(costs[r.id] for r in automatic)
    open_cost = sum(costs[r.id] for r in automatic if r.verdict == "unknown")
    score = 0.0 if status == "ineligible" or total == 0 else round(1 - open_cost / total, 4)
    unknown = sorted(
        (r for r in results if r.verdict == "unknown"),
        key=lambda r: (r.assessment == "manual", costs[r.id]),
    )
    next_steps = [f"{r.id}: {r.check} ({r.reason})" for r in unknown]
    return status, score, next_steps


def sort_key(status: str, score: float, fails: int, reference: str) -> tuple[Any, ...]:
    return (STATUS_ORDER[status], -score, fails, reference)


def rank(results: list[PatientResult]) -> list[PatientResult]:
    """Order results (best candidates first) and number them from 1."""
    ordered = sorted(
        results,
        key=lambda r: sort_key(
            r.status,
            r.score,
            sum(1 for c in r.criteria if c.verdict == "fail"),
            r.patient.reference,
        ),
    )
    for position, result in enumerate(ordered, start=1):
        result.rank = position
    return ordered


def excluded_before_criteria(verdicts: Mapping[str, str], status: str) -> bool:
    """Ineligible without any `fail`: no candidate whatever the criteria say (deceased). The
    funnels count such a patient apart, before the first criterion."""
    return status == "ineligible" and "fail" not in verdicts.values()
