"""What the engine returns: verdicts with evidence, per criterion and per patient.

These are dataclasses, serialized by orjson as they are; `service/schemas.py` mirrors them
as pydantic models for the published contract. Field names here are the contract: keep them
in step with openapi/. Unlike the facts they have no `__slots__`: orjson reads a dataclass's
`__dict__` at once but a slotted one field by field, which made writing a screen's results
(some 20 kB a patient) twice as slow. In a screen a result lives only until it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from service.facts import Code, Identifier

VerdictValue = Literal["pass", "fail", "unknown", "not_applicable"]
Status = Literal["likely_eligible", "possibly_eligible", "ineligible"]


@dataclass(frozen=True)
class Evidence:
    """One record (or derived value) behind a verdict."""

    reference: str | None  # "Observation/o1"; None for a value derived from `inputs`
    code: Code | None = None
    value: float | str | None = None  # as recorded
    unit: str | None = None  # as recorded
    converted_value: float | None = None
    converted_unit: str | None = None
    date: date | None = None
    rule: str | None = None  # the comparison or test applied, with numbers
    note: str | None = None  # e.g. "older than the 90-day window; not used"
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictValue
    reason: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class CriterionResult:
    id: str
    kind: str
    assessment: str
    text: str
    verdict: VerdictValue
    reason: str
    evidence: tuple[Evidence, ...]
    check: str | None = None  # what would decide it, for unknown verdicts


@dataclass(frozen=True)
class TrialRef:
    id: str
    version: str
    terminology: str


@dataclass(frozen=True)
class PatientSummary:
    reference: str
    age: int | None  # at as_of, or at death; None when the date of death is not recorded
    sex: str | None
    # business identifiers (MRN ...) so a coordinator finds the chart; `mrn` is the value of
    # the configured type (COHORT_MATCH_MRN_TYPE, default MR)
    identifiers: tuple[Identifier, ...] = ()
    mrn: str | None = None
    deceased: bool = False  # died on or before as_of (or deceasedBoolean without a date)
    deceased_date: date | None = None


@dataclass
class PatientResult:
    trial: TrialRef
    patient: PatientSummary
    as_of: date
    status: Status
    score: float
    criteria: list[CriterionResult]
    next_steps: list[str]
    # why the status was set apart from the criteria (a deceased patient), else None
    status_reason: str | None = None
    problems: list[str] = field(default_factory=list)
    rank: int | None = None

    def verdicts(self) -> dict[str, VerdictValue]:
        return {result.id: result.verdict for result in self.criteria}
