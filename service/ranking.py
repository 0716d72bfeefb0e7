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
- next step (`next_step`): the one line every channel shows (CLI, API, CSV, pages, cards). For
  an ineligible patient it is why they are out: `status_reason` (deceased), else every failing
  criterion with its reason, which carries the value and date ("fails I6.hgb: Hemoglobin ...
  58 g/L >= 60 g/L on 2026-11-10: not met"); a reason without a date gets its evidence's. For
  a likely or possibly eligible patient it is the cheapest open check, the first of
  `next_steps`. Never an open check for an ineligible patient: ordering a test for someone
  already out wastes a draw.
"""

from __future__ import annotations

import re
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


_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


def failure_text(criterion_id: str, reason: str, evidence_dates: Sequence[object]) -> str:
    """`I6.hgb: <reason>`; the first evidence date is added when the reason names none (a
    diagnosis "on record")."""
    if _DATED.search(reason) is None:
        dated = next((d for d in evidence_dates if d), None)
        if dated is not None:
            return f"{criterion_id}: {reason} ({dated})"
    return f"{criterion_id}: {reason}"


def next_step(
    status: str,
    failures: Sequence[str],
    next_steps: Sequence[str],
    status_reason: str | None = None,
) -> str | None:
    """The next step (module docstring): why an ineligible patient is out, else the cheapest
    open check. `failures` are `failure_text` lines of the failing criteria, in protocol order."""
    if status_reason is not None:
        return status_reason
    if status == "ineligible":
        return "fails " + "; ".join(failures) if failures else None
    return next_steps[0] if next_steps else None


def result_next_step(result: PatientResult) -> str | None:
    """`next_step` of an engine result."""
    failures = [
        failure_text(c.id, c.reason, [e.date.isoformat() if e.date else None for e in c.evidence])
        for c in result.criteria
        if c.verdict == "fail"
    ]
    return next_step(result.status, failures, result.next_steps, result.status_reason)


def stored_next_step(result: Mapping[str, Any]) -> str | None:
    """`next_step` of a result as its JSON contract (a stored sweep's): the field when the
    result has it, else computed the same way (results stored before it was recorded)."""
    if "next_step" in result:
        stored: str | None = result["next_step"]
        return stored
    failures = [
        failure_text(c["id"], c["reason"], [e.get("date") for e in c.get("evidence") or ()])
        for c in result["criteria"]
        if c["verdict"] == "fail"
    ]
    return next_step(
        result["status"], failures, result.get("next_steps") or (), result.get("status_reason")
    )


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
