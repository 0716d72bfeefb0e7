"""The published output contract, as pydantic models (mirrors service/criteria/verdict.py).

The engine builds slotted dataclasses for speed; these models describe the same JSON for
the published contract in openapi/ and validate results in tests, so the two cannot drift
apart unnoticed (tests/test_contract.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CodePublic",
    "CountsPublic",
    "CriterionResultPublic",
    "EvidencePublic",
    "IdentifierPublic",
    "PatientResultPublic",
    "RankedListPublic",
    "ScoreItemPublic",
    "ScorePublic",
    "TrialRefPublic",
]

VerdictValue = Literal["pass", "fail", "unknown", "not_applicable"]
Status = Literal["likely_eligible", "possibly_eligible", "ineligible"]


class _Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodePublic(_Public):
    system: str
    code: str
    display: str | None = None


class EvidencePublic(_Public):
    reference: str | None = Field(
        description="FHIR reference, e.g. Observation/o1; null for a derived value"
    )
    code: CodePublic | None = None
    value: float | str | None = Field(None, description="As recorded")
    unit: str | None = Field(None, description="As recorded")
    converted_value: float | None = Field(
        None, description="In the criterion's canonical UCUM unit"
    )
    converted_unit: str | None = None
    date: dt.date | None = None
    rule: str | None = Field(None, description="The comparison or test applied, with its numbers")
    note: str | None = None
    inputs: list[str] = Field(default_factory=list, description="References a derived value used")


ItemStatus = Literal[
    "counted",
    "lower_in_domain",
    "withheld",
    "undetermined",
    "not_met",
    "outside_window",
    "not_in_record",
]


class ScoreItemPublic(_Public):
    id: str
    label: str
    domain: str
    weight: int
    status: ItemStatus = Field(
        description=(
            "counted; lower_in_domain (met, a higher item of its domain counts); withheld (met, "
            "better explained by another cause on record); undetermined; not_met; "
            "outside_window; not_in_record"
        )
    )
    counted: bool
    reason: str = Field(description="Why it counts or not, with the comparison and its source")
    clinical: bool = False
    evidence: list[EvidencePublic] = Field(default_factory=list)


class ScorePublic(_Public):
    instrument: str = Field(description="Instrument id, e.g. eular_acr_2019, sledai_2k")
    title: str
    total: int = Field(description="Sum of the counted items' weights")
    threshold: float
    op: str = Field(description="How total is compared with threshold")
    met: bool
    lower_bound: bool = Field(
        description="Items the record cannot show may add to the total; never read as complete"
    )
    window_days: int | None = Field(
        description="Days before as_of an item counts; null: at any time before as_of"
    )
    summary: str
    entry: ScoreItemPublic | None = None
    items: list[ScoreItemPublic] = Field(default_factory=list)


class CriterionResultPublic(_Public):
    id: str
    kind: Literal["inclusion", "exclusion"]
    assessment: Literal["automatic", "manual"]
    text: str = Field(description="The protocol text, verbatim")
    verdict: VerdictValue
    reason: str
    evidence: list[EvidencePublic]
    check: str | None = Field(None, description="What would decide an unknown verdict")
    score: ScorePublic | None = Field(
        None, description="A score computed from the record (EULAR/ACR 2019, SLEDAI-2K)"
    )


class TrialRefPublic(_Public):
    id: str
    version: str
    terminology: str = Field(description="Version (content hash) of the code tables used")


class IdentifierPublic(_Public):
    value: str
    system: str | None = None
    type: str | None = Field(None, description="Identifier.type code, e.g. MR (HL7 v2 0203)")
    label: str | None = Field(None, description="Identifier.type text or display")


class PatientPublic(_Public):
    reference: str
    age: int | None = Field(
        description="Age at as_of, or at death; null when unknown (date of birth or of death)"
    )
    sex: str | None
    identifiers: list[IdentifierPublic] = Field(
        default_factory=list,
        description="Business identifiers from Patient.identifier (MRN and the like)",
    )
    mrn: str | None = Field(
        None,
        description="The identifier of the configured type (COHORT_MATCH_MRN_TYPE, default MR)",
    )
    deceased: bool = Field(
        False, description="Died on or before as_of (or recorded deceased without a date)"
    )
    deceased_date: dt.date | None = None
    name: str | None = Field(
        None, description="Patient.name in one line (official, else usual); null when not sent"
    )


class PatientResultPublic(_Public):
    trial: TrialRefPublic
    patient: PatientPublic
    as_of: dt.date
    status: Status
    score: float = Field(ge=0, le=1)
    criteria: list[CriterionResultPublic]
    next_steps: list[str]
    status_reason: str | None = Field(
        None,
        description="Why the status was set apart from the criteria (a deceased patient)",
    )
    next_step: str | None = Field(
        None,
        description=(
            "The one next step every channel shows: for an ineligible patient why they are out "
            "(status_reason, else the failing criteria with value and date); otherwise the "
            "cheapest open check (the first of next_steps)"
        ),
    )
    problems: list[str] = Field(default_factory=list, description="Records that could not be read")
    rank: int | None = None


class CountsPublic(_Public):
    patients: int
    likely_eligible: int
    possibly_eligible: int
    ineligible: int
    resources: int
    errors: int


class UnscreenedPublic(_Public):
    patient: str
    reason: str


class RankedListPublic(_Public):
    trial: TrialRefPublic
    as_of: dt.date
    candidates: list[PatientResultPublic]
    counts: CountsPublic
    unscreened: list[UnscreenedPublic] = Field(
        default_factory=list, description="Patients who could not be fetched, and why"
    )
