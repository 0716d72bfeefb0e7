"""What the pages show, built from engine results: pure functions, no I/O, no HTML.

- `checklist`: one patient's criteria grouped inclusion / exclusion in protocol order, each
  with its evidence (value as recorded and converted, date, a link to the source resource).
- `explain`: the overall status and the score in sentences (service/ranking.py's policy).
- `funnel`: per criterion, how many patients pass / fail / are unknown / not applicable, and
  the sequential drop-off: patients still in after that criterion and all before it.
- `candidates_csv`: the same CSV as `cohort-match screen --format csv` (one writer:
  service/ranked_output.py).
- `stored_funnel`: a stored sweep's funnel (service/sweeps/report.attrition) as `funnel` rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from service.criteria.model import TrialDefinition
from service.criteria.verdict import CriterionResult, Evidence, PatientResult
from service.mappers.patient import display_name
from service.ranked_output import Funnel, csv_lines

if TYPE_CHECKING:  # the web layer needs no sweeps machinery to be imported
    from service.sweeps.schemas import AttritionPublic

__all__ = [
    "STATUS_LABEL",
    "VERDICT_LABEL",
    "Checklist",
    "CriterionRow",
    "EvidenceRow",
    "FunnelRow",
    "Link",
    "candidates_csv",
    "checklist",
    "display_user",
    "ehr_link",
    "explain",
    "funnel",
    "next_check",
    "patient_banner",
    "short_step",
    "source_link",
    "stored_funnel",
]

VERDICT_LABEL = {
    "pass": "Pass",
    "fail": "Fail",
    "unknown": "Unknown",
    "not_applicable": "Not applicable",
}
STATUS_LABEL = {
    "likely_eligible": "Likely eligible",
    "possibly_eligible": "Possibly eligible",
    "ineligible": "Ineligible",
}
# A FHIR relative reference (R4 3.1.0.1.1 `Type/id`); anything else gets no link.
REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
ANNOTATION = re.compile(r"^\{[^}]*\}$")
ASSESSMENT_LABEL = {"automatic": "decided from the record", "manual": "decided at screening"}


@dataclass(frozen=True)
class Link:
    text: str
    href: str | None


@dataclass(frozen=True)
class EvidenceRow:
    source: Link | None
    recorded: str | None  # value and unit as recorded
    converted: str | None  # in the criterion's unit, when it differs from the recorded one
    converted_same: bool  # converted, and equal to the recorded value: nothing to show twice
    date: str | None
    rule: str | None
    note: str | None
    inputs: list[Link]


@dataclass(frozen=True)
class CriterionRow:
    id: str
    text: str
    assessment: str
    verdict: str
    verdict_label: str
    reason: str
    check: str | None
    evidence: list[EvidenceRow]


@dataclass(frozen=True)
class Checklist:
    inclusion: list[CriterionRow]
    exclusion: list[CriterionRow]
    next_steps: list[str]
    problems: list[str]


@dataclass(frozen=True)
class FunnelRow:
    id: str
    kind: str
    text: str
    passed: int
    failed: int
    unknown: int
    not_applicable: int
    remaining: int  # patients with no fail in this criterion or any before it
    dropped: int  # patients this criterion removed from those still in


def number(value: float) -> str:
    """11.8 -> "11.8", 118.0 -> "118", 0.000123 -> "0.000123" (no float noise)."""
    text = f"{value:.6g}"
    return text if "e" not in text else f"{value:f}".rstrip("0").rstrip(".")


def _quantity(value: float | str | None, unit: str | None) -> str | None:
    if value is None:
        return None
    shown = number(value) if isinstance(value, float | int) else str(value)
    # A UCUM annotation alone ("{score}") is a unitless count: shown as the bare number.
    if unit and not ANNOTATION.match(unit):
        return f"{shown} {unit}"
    return shown


def source_link(iss: str, reference: str | None) -> Link | None:
    if not reference:
        return None
    href = f"{iss.rstrip('/')}/{reference}" if REFERENCE.match(reference) else None
    return Link(reference, href)


def _evidence(iss: str, item: Evidence) -> EvidenceRow:
    recorded = _quantity(item.value, item.unit)
    converted = _quantity(item.converted_value, item.converted_unit)
    return EvidenceRow(
        source=source_link(iss, item.reference),
        recorded=recorded,
        converted=converted if converted != recorded else None,
        converted_same=converted is not None and converted == recorded,
        date=item.date.isoformat() if item.date else None,
        rule=item.rule,
        note=item.note,
        inputs=[link for ref in item.inputs if (link := source_link(iss, ref)) is not None],
    )


def _row(iss: str, result: CriterionResult) -> CriterionRow:
    return CriterionRow(
        id=result.id,
        text=result.text,
        assessment=ASSESSMENT_LABEL.get(result.assessment, result.assessment),
        verdict=result.verdict,
        verdict_label=VERDICT_LABEL[result.verdict],
        reason=result.reason,
        check=result.check if result.verdict == "unknown" else None,
        evidence=[_evidence(iss, e) for e in result.evidence],
    )


def checklist(result: PatientResult, iss: str) -> Checklist:
    rows = [_row(iss, c) for c in result.criteria]
    kinds = {c.id: c.kind for c in result.criteria}
    return Checklist(
        inclusion=[r for r in rows if kinds[r.id] == "inclusion"],
        exclusion=[r for r in rows if kinds[r.id] == "exclusion"],
        # an ineligible patient's next step is why they are out, not an open check
        next_steps=(
            [result.next_step]
            if result.status == "ineligible" and result.next_step
            else list(result.next_steps)
        ),
        problems=list(result.problems),
    )


def explain(result: PatientResult, trial: TrialDefinition) -> list[str]:
    """The status and score in sentences, with the numbers behind them."""
    fails = [c.id for c in result.criteria if c.verdict == "fail"]
    costs = {c.id: c.cost for c in trial.criteria}
    automatic = [c for c in result.criteria if c.assessment == "automatic"]
    open_ = [c for c in automatic if c.verdict == "unknown"]
    total = sum(costs[c.id] for c in automatic)
    settled = total - sum(costs[c.id] for c in open_)
    if result.status_reason is not None:
        status = (
            f"Ineligible: {result.status_reason}. The criteria below are shown for the record "
            "only; they do not decide."
        )
        score = "Score 0: an ineligible patient ranks after every other candidate."
    elif result.status == "ineligible":
        status = f"Ineligible: {len(fails)} criterion failed ({', '.join(fails)})."
        if len(fails) != 1:
            status = f"Ineligible: {len(fails)} criteria failed ({', '.join(fails)})."
        score = "Score 0: an ineligible patient ranks after every other candidate."
    else:
        if result.status == "likely_eligible":
            status = (
                "Likely eligible: every criterion the record can decide passes or does not "
                "apply; what remains is decided at the screening visit."
            )
        else:
            status = (
                f"Possibly eligible: nothing fails, but {len(open_)} criteria the record "
                "should decide are still unknown."
            )
        score = (
            f"Score {number(result.score)}: {number(settled)} of {number(total)} units of "
            "automatic screening effort are settled (each criterion weighted by its cost: "
            "chart review 1, lab draw 2, imaging 3)."
        )
    order = (
        "Candidates are ranked by status, then score, then fewer failed criteria, then "
        "patient reference."
    )
    return [status, score, order]


def funnel(trial: TrialDefinition, results: Sequence[PatientResult]) -> list[FunnelRow]:
    """Protocol order; `remaining` counts patients with no fail up to and including a row.
    A patient who is no candidate whatever the criteria say (deceased) enters no row.
    Counted by service/ranked_output.Funnel, as a sweep's stored funnel is."""
    counter = Funnel([c.id for c in trial.criteria])
    for result in results:
        counter.add(result.verdicts(), result.status)
    return [
        FunnelRow(
            id=criterion.id,
            kind=criterion.kind,
            text=criterion.text,
            passed=step.verdicts["pass"],
            failed=step.verdicts["fail"],
            unknown=step.verdicts["unknown"],
            not_applicable=step.verdicts["not_applicable"],
            remaining=step.remaining_after,
            dropped=step.dropped,
        )
        for criterion, step in zip(trial.criteria, counter.steps(), strict=True)
    ]


def stored_funnel(attrition: AttritionPublic) -> list[FunnelRow]:
    """The funnel a sweep stored, as the rows `funnel` gives on demand (the same counts:
    `remaining` after the criterion, `dropped` = the patients still in who fail it)."""
    return [
        FunnelRow(
            id=step.id,
            kind=step.kind,
            text=step.text,
            passed=step.verdicts.pass_,
            failed=step.verdicts.fail,
            unknown=step.verdicts.unknown,
            not_applicable=step.verdicts.not_applicable,
            remaining=step.remaining_after,
            dropped=step.dropped,
        )
        for step in attrition.steps
    ]


def candidates_csv(trial: TrialDefinition, ranked: Sequence[PatientResult]) -> str:
    """The CSV of `cohort-match screen --format csv` (service/ranked_output.csv_lines); each
    result keeps the rank it has in the whole list (`ranked` may be filtered by status)."""
    results = (orjson.loads(orjson.dumps(result)) for result in ranked)
    return "".join(csv_lines([c.id for c in trial.criteria], results))


def next_check(result: PatientResult, width: int = 90) -> str | None:
    """The patient's next step (ranking.next_step, as every channel shows it), cut to `width`."""
    return short_step(result.next_step, width)


def short_step(step: str | None, width: int = 90) -> str | None:
    """A next step cut to `width` characters with an ellipsis (a stored result is JSON: its
    step comes from ranking.stored_next_step). Cut, never reworded: the CLI cuts at 90 too."""
    if not step:
        return None
    return step if len(step) <= width else step[: width - 1].rstrip() + "…"


def ehr_link(template: str | None, reference: str) -> str | None:
    """The patient's record in the EHR (COHORT_MATCH_EHR_PATIENT_URL, `{id}` replaced by the
    FHIR id, percent-encoded), or None when the site configured none."""
    if not template:
        return None
    return template.replace("{id}", quote(reference.removeprefix("Patient/"), safe=""))


def display_user(user: str, iss: str) -> str:
    """`fhirUser` relative to the EHR it came from (the audit trail keeps it absolute)."""
    prefix = iss.rstrip("/") + "/"
    return user.removeprefix(prefix) if user.startswith(prefix) else user


def patient_banner(resource: dict[str, Any] | None) -> dict[str, str | None]:
    """Name, birth date, gender and id from a FHIR Patient, for the banner that tells a
    clinician they are looking at the right person."""
    if not resource:
        return {"name": None, "birth_date": None, "gender": None, "id": None}
    return {
        "name": display_name(resource.get("name")),
        "birth_date": resource.get("birthDate"),
        "gender": resource.get("gender"),
        "id": resource.get("id"),
    }
