"""The patient page's view model: one patient's checklist, banner, status and score explained,
and a table per computed instrument score (EULAR/ACR 2019, SLEDAI-2K) under its criterion.
Pure: built from the engine's result and the Patient resource the EHR returned (if any)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult, Score, ScoreItem
from service.web.cohort import nav_query

# `_evidence` is the checklist's one evidence formatter (value as recorded and converted, date,
# source link); the score table shows an item's records the same way.
from service.web.views import (
    STATUS_LABEL,
    EvidenceRow,
    _evidence,
    checklist,
    display_user,
    ehr_link,
    explain,
    number,
    patient_banner,
)

__all__ = ["ScoreRow", "ScoreTable", "patient_context", "score_tables"]

# Each item's status in words (service/criteria/verdict.py ItemStatus).
ITEM_STATUS = {
    "counted": "Counted",
    "lower_in_domain": "Met; a higher item of its domain counts",
    "withheld": "Withheld: another cause",
    "undetermined": "Undetermined",
    "not_met": "Not met",
    "outside_window": "Outside the window",
    "not_in_record": "Not in the record",
}


@dataclass(frozen=True)
class ScoreRow:
    id: str
    label: str
    points: str  # the item's weight; "entry" for the entry criterion
    status: str
    status_label: str
    reason: str
    evidence: list[EvidenceRow]


@dataclass(frozen=True)
class ScoreTable:
    """One computed score: the caption's sentence, a row per item the record holds, and the
    items with no record named in one line."""

    instrument: str
    caption: str
    met: bool
    rows: list[ScoreRow]
    absent: list[str]


def score_tables(result: PatientResult, iss: str) -> dict[str, ScoreTable]:
    """The computed score of each criterion that has one, by criterion id."""
    return {c.id: _score_table(c.score, iss) for c in result.criteria if c.score is not None}


def _score_table(score: Score, iss: str) -> ScoreTable:
    window = (
        f"the {score.window_days} days before the screening date"
        if score.window_days is not None
        else "any time before the screening date"
    )
    caption = (
        f"{score.title} computed from the record ({window}): {score.total} "
        f"({score.op} {number(score.threshold)} needed), {'met' if score.met else 'not met'}"
        + ("; a lower bound: items a visit would score are missing" if score.lower_bound else "")
    )
    items = ([score.entry] if score.entry is not None else []) + list(score.items)
    return ScoreTable(
        instrument=score.instrument,
        caption=caption,
        met=score.met,
        rows=[_score_row(i, iss) for i in items if i.status != "not_in_record"],
        absent=[i.label for i in items if i.status == "not_in_record"],
    )


def _score_row(item: ScoreItem, iss: str) -> ScoreRow:
    return ScoreRow(
        id=item.id,
        label=item.label,
        points="entry" if item.domain == "entry" else str(item.weight),
        status=item.status,
        status_label=ITEM_STATUS.get(item.status, item.status),
        reason=item.reason,
        evidence=[_evidence(iss, e) for e in item.evidence],
    )


def patient_context(
    trial: TrialDefinition,
    day: dt.date,
    result: PatientResult,
    resource: dict[str, Any] | None,
    *,
    user: str,
    iss: str,
    show_banner: bool,
    ehr_url: str | None = None,
) -> dict[str, Any]:
    """The context of patient.html."""
    tally = {v: 0 for v in ("pass", "fail", "unknown", "not_applicable")}
    for criterion in result.criteria:
        tally[criterion.verdict] += 1
    banner: dict[str, Any] = patient_banner(resource)
    banner["show"] = show_banner
    return {
        "title": f"{trial.id} checklist",
        "user": display_user(user, iss),
        "nav_query": nav_query(trial, day),
        "trial": trial,
        "result": result,
        "banner": banner,
        "status_label": STATUS_LABEL[result.status],
        "explanation": explain(result, trial),
        "tally": tally,
        "sheet": checklist(result, iss),
        "scores": score_tables(result, iss),
        "iss": iss,
        "ehr_href": ehr_link(ehr_url, result.patient.reference),
    }
