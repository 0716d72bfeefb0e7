"""What the engine returns: verdicts with evidence, per criterion and per patient.

These are dataclasses, serialized by orjson as they are; `service/schemas.py` mirrors them
as pydantic models for the published contract. Field names here are the contract: keep them
in step with openapi/. Unlike the facts they have no `__slots__`: orjson reads a dataclass's
`__dict__` at once but a slotted one field by field, which made writing a screen's results
(some 20 kB a patient) twice as slow. In a screen a result lives only until it is written.
Like the facts, they are not `frozen=True` (its per-field `object.__setattr__` was measurable
on the hot path) but `unsafe_hash=True`, hashable as before; nothing assigns to them after
they are built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from service.facts import Code, Identifier

VerdictValue = Literal["pass", "fail", "unknown", "not_applicable"]
Status = Literal["likely_eligible", "possibly_eligible", "ineligible"]
# Why an item of a computed score counts or not (criteria/scoring.py).
ItemStatus = Literal[
    "counted",  # met in the window, no competing cause: its weight is in the total
    "lower_in_domain",  # met, but a higher-weighted item of its domain counts instead
    "withheld",  # met, but the record shows a competing cause ("better explained by")
    "undetermined",  # a record that cannot be read either way (no reference range, a bound)
    "not_met",  # the record holds the test or finding in the window, and it is not met
    "outside_window",  # found only before the instrument's window
    "not_in_record",  # nothing in the record
]


@dataclass(unsafe_hash=True)
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


@dataclass(unsafe_hash=True)
class ScoreItem:
    """One item of a computed score: its weight, whether it counts and why, and the records."""

    id: str
    label: str
    domain: str
    weight: int
    status: ItemStatus
    counted: bool
    reason: str
    clinical: bool = False
    evidence: tuple[Evidence, ...] = ()


@dataclass(unsafe_hash=True)
class Score:
    """A score computed from the record (EULAR/ACR 2019, SLEDAI-2K): the breakdown behind a
    verdict. `lower_bound`: items the record cannot show (a visit's clinical findings) may add
    to `total`; it is never read as the whole score."""

    instrument: str
    title: str
    total: int
    threshold: float
    op: str  # how total is compared with threshold (">=" classified, ">" activity)
    met: bool
    lower_bound: bool
    window_days: int | None  # None: items count whenever they occurred before as_of
    summary: str
    entry: ScoreItem | None = None  # the entry criterion, when the instrument has one
    items: tuple[ScoreItem, ...] = ()


@dataclass(unsafe_hash=True)
class Verdict:
    verdict: VerdictValue
    reason: str
    evidence: tuple[Evidence, ...] = ()
    score: Score | None = None


@dataclass(unsafe_hash=True)
class CriterionResult:
    id: str
    kind: str
    assessment: str
    text: str
    verdict: VerdictValue
    reason: str
    evidence: tuple[Evidence, ...]
    check: str | None = None  # what would decide it, for unknown verdicts
    score: Score | None = None  # a score computed from the record, with every item


@dataclass(unsafe_hash=True)
class TrialRef:
    id: str
    version: str
    terminology: str


@dataclass(unsafe_hash=True)
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
    name: str | None = None  # Patient.name as a coordinator reads it


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
    # the one next step every channel shows (ranking.next_step): why an ineligible patient
    # is out, else the cheapest open check
    next_step: str | None = None
    problems: list[str] = field(default_factory=list)
    rank: int | None = None

    def verdicts(self) -> dict[str, VerdictValue]:
        return {result.id: result.verdict for result in self.criteria}
