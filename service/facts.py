"""Normalized clinical facts: what the mappers produce and the criteria engine reads.

Every fact keeps its provenance (the FHIR reference it came from and, for files, where in
the file) and its codes exactly as recorded, so a verdict can cite them. Facts are dataclasses
with slots: a sweep builds millions of them, and they are never validated twice. They are
treated as immutable but not declared `frozen=True`: a frozen dataclass's `__init__` sets
each field through `object.__setattr__`, and dropping it cut the screen's CPU by 15-25%
(issue 13, identical output). `unsafe_hash=True` keeps them hashable by value, as frozen
made them (value-set lookups and sets of codes rely on it); nothing assigns to a fact after
it is built.

`concepts` is the set of value-set names (terminology/valuesets/<name>.csv) the record's
codes belong to, resolved once by the mapper so the engine never touches code tables.
"""

from __future__ import annotations

from collections.abc import Iterable, KeysView
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

Sex = Literal["female", "male", "other", "unknown"]
# Condition.clinicalStatus codes that say the condition is over.
RESOLVED_STATUSES = frozenset({"inactive", "resolved", "remission"})
# A status that was sent but could not be read (mappers/common.status_code) starts with this.
UNREAD_STATUS = "unread: "


def unread_status(sent: str) -> str:
    """The status field of a record whose status was sent as `sent` and could not be read."""
    return f"{UNREAD_STATUS}'{sent}'"


def status_unread(status: str | None) -> bool:
    return status is not None and status.startswith(UNREAD_STATUS)


# Partial dates. FHIR allows "2021" and "2021-06": such a date is any day of that year or
# month. A fact keeps its first day in the date field every rule has always read, and its
# last day in a `*_latest` field only when the date was partial (None for a full date: the
# common case costs nothing). A rule decides only when every possible day gives the same
# answer, and shows the date as written (`written`), never an invented first day.
def written(first: date, last: date | None) -> str:
    """A date as it was written: "2021", "2021-06", or the full day."""
    if last is None or last == first:
        return first.isoformat()
    if first.month == 1 and last.month == 12:
        return f"{first.year:04d}"
    return f"{first.year:04d}-{first.month:02d}"


def last_day(first: date | None, last: date | None) -> date | None:
    """The last day a date may be: its first day unless it was partial."""
    return first if last is None else last


Qualitative = Literal["positive", "negative"]


@dataclass(slots=True, unsafe_hash=True)
class Code:
    system: str
    code: str
    display: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Quantity:
    """A value with the unit as recorded and, when it could be converted, the canonical one."""

    value: float
    unit: str | None
    comparator: str | None = None
    canonical_value: float | None = None
    canonical_unit: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class RefRange:
    """One Observation.referenceRange, its limits converted like the value."""

    low: Quantity | None
    high: Quantity | None
    type: str | None = None  # referenceRange.type code: normal, recommended, treatment, ...
    applies_to: tuple[str, ...] = ()  # appliesTo codes (e.g. male, female, pre-puberty)
    sex: Sex | None = None  # from appliesTo, when it names one
    age_low_years: float | None = None
    age_high_years: float | None = None
    text: str | None = None

    @property
    def placeholder(self) -> bool:
        """ "0-0", a high of 0 or below, limits swapped: what LIS interfaces send for a range
        they do not have. No limit of it is a limit of the analyte."""
        high = _number(self.high)
        if high is None:
            return False
        low = _number(self.low)
        return high <= 0 or (low is not None and low >= high)


def _number(limit: Quantity | None) -> float | None:
    if limit is None:
        return None
    return limit.canonical_value if limit.canonical_value is not None else limit.value


@dataclass(slots=True, unsafe_hash=True)
class Identifier:
    """A business identifier of the patient (MRN and the like), as the EHR shows it."""

    value: str
    system: str | None = None
    type: str | None = None  # Identifier.type coding code: MR, PI, NI ...
    label: str | None = None  # Identifier.type text or display


@dataclass(slots=True, unsafe_hash=True)
class Demographics:
    reference: str
    birth_date: date | None
    # "1980" or "1980-06" carry less than a day: the range of possible birth dates.
    birth_date_latest: date | None
    sex: Sex | None
    deceased: bool = False  # deceasedBoolean true or any deceasedDateTime
    deceased_date: date | None = None
    identifiers: tuple[Identifier, ...] = ()
    name: str | None = None  # as a coordinator reads it (mappers/patient.display_name)
    deceased_date_latest: date | None = None  # last possible day of a partial date of death


# The status `criteria.common.on_or_before` gives a result whose partial date ("2026-11")
# may be after the day screened: kept with no reading, like a status that cannot be read.
MAYBE_LATER = "dated-partially"
# FHIR R4 ObservationStatus codes of results final enough to act on.
COUNTED_RESULT_STATUSES = frozenset({"final", "amended", "corrected"})


@dataclass(slots=True, unsafe_hash=True)
class LabResult:
    reference: str
    codes: tuple[Code, ...]
    concepts: frozenset[str]
    effective: date | None
    status: str
    quantity: Quantity | None = None
    text: str | None = None  # valueString, or the text of a coded value
    qualitative: Qualitative | None = None  # from a coded/string value or the interpretation
    grade: str | None = None  # A-E for graded domains (BILAG)
    ref_high: Quantity | None = None
    source: str | None = None
    effective_at: datetime | None = None  # the full timestamp, when one was sent
    ref_ranges: tuple[RefRange, ...] = ()
    interpretation: tuple[Code, ...] = ()
    titer: float | None = None  # 1:N dilution as N (valueRatio or "1:160")
    effective_latest: date | None = None  # last possible day of a partial date ("2026-11")

    @property
    def status_unread(self) -> bool:
        """Sent with a status we cannot read ("F", "unknown", none): kept with no reading,
        so an earlier result never decides in its place."""
        return self.status not in COUNTED_RESULT_STATUSES

    @property
    def status_phrase(self) -> str:
        """ "has status 'F', not one that counts" (or "has no status, ..."), for reasons."""
        if self.status == MAYBE_LATER and self.effective is not None:
            when = written(self.effective, self.effective_latest)
            return f"is dated {when}, which may be after the day screened"
        sent = f"status {self.status!r}" if self.status else "no status"
        return f"has {sent}, not one that counts"


@dataclass(slots=True, unsafe_hash=True)
class Diagnosis:
    reference: str
    codes: tuple[Code, ...]
    concepts: frozenset[str]
    clinical_status: str | None
    verification_status: str | None
    onset: date | None
    abatement: date | None
    recorded: date | None
    source: str | None = None
    text: str | None = None  # CodeableConcept.text, else the first display
    # Value sets whose review terms the text matches, for a record no value set knows.
    review: frozenset[str] = frozenset()
    # Over on a date not sent: abatementBoolean true, an abatementString that is not a date,
    # abatementAge/abatementRange. Read like a resolved status without an end date.
    abated: bool = False
    # Last possible days of partial dates ("2021", "2021-06"); None for full dates.
    onset_latest: date | None = None
    abatement_latest: date | None = None
    recorded_latest: date | None = None

    @property
    def uncertain(self) -> bool:
        """Recorded as unconfirmed, provisional or differential, or with a verification status
        that could not be read: it may not hold, so it never decides alone (refuted and
        entered-in-error records never become facts)."""
        return self.verification_status not in (None, "confirmed")

    @property
    def status_unread(self) -> bool:
        """A clinical status was sent but could not be read: whether it is current is unsure."""
        return status_unread(self.clinical_status)

    @property
    def active(self) -> bool:
        """Active unless the record says it resolved (status or an abatement of any kind)."""
        if self.clinical_status in RESOLVED_STATUSES:
            return False
        return self.abatement is None and not self.abated

    def known_on(self, day: date) -> bool:
        """The condition existed on `day`: its onset (else, with no onset, its recorded date)
        is not later. A diagnosis recorded only after `day` did not exist yet; one entered later
        with an earlier onset (a history taken afterwards) was already there.
        A partial onset ("2026-11") counts from its first day: possibly known (`unsure_on`).
        """
        began = self.onset or self.recorded
        return began is None or began <= day

    def began(self) -> tuple[date | None, date | None]:
        """(first, last) possible day of its onset, else of its recorded date; last is None
        unless the date was partial."""
        if self.onset is not None:
            return self.onset, self.onset_latest
        return self.recorded, self.recorded_latest

    def active_on(self, day: date) -> bool:
        """Active on `day`: known by then and not yet over (possibly so when a partial date
        leaves it open: `unsure_on` says why).

        An abatement date decides when there is one (after `day`: still active then, whatever
        the status says today); without one, a resolved/inactive/remission status means over.
        """
        if not self.known_on(day):
            return False
        if self.abatement is not None:
            return (self.abatement_latest or self.abatement) > day
        return not self.abated and self.clinical_status not in RESOLVED_STATUSES

    def unsure_on(self, day: date, active_only: bool) -> str | None:
        """Why a partial date leaves open whether the record existed (and, `active_only`, was
        still active) on `day`, or None when every possible day gives the same answer."""
        if self.onset_latest is None and self.recorded_latest is None:
            if self.abatement_latest is None:
                return None  # full dates: the common case
        first, last = self.began()
        if first is not None and last is not None and first <= day < last:
            what = "onset" if self.onset is not None else "recorded"
            return f"{what} {written(first, last)}: may be after {day}"
        latest = self.abatement_latest
        if active_only and self.abatement is not None and latest is not None:
            if self.abatement <= day < latest:
                return f"abated in {written(self.abatement, latest)}: may still be active on {day}"
        return None


@dataclass(slots=True, unsafe_hash=True)
class MedicationExposure:
    reference: str
    codes: tuple[Code, ...]
    concepts: frozenset[str]
    status: str
    start: date | None
    end: date | None
    dose: Quantity | None = None  # one administration, as recorded
    doses_per_day: float | None = None
    daily_dose_mg: float | None = None  # ingredient mg per day, when dose and timing say so
    prednisone_factor: float | None = None  # mg prednisone per mg, for glucocorticoids
    route: str | None = None
    source: str | None = None
    resource_type: str = "MedicationStatement"  # or MedicationRequest/Administration/Dispense
    text: str | None = None
    review: frozenset[str] = frozenset()
    end_basis: str | None = None  # how `end` was found when not recorded (days supply ...)
    # The Medication the record names by reference when it could not be read, and why
    # ("Medication/123 (not sent with the records)"): the drug is unknown. Such a record has
    # no codes; unless its display matches review terms (`review`), medication criteria read
    # it as "could be" any drug they look for (service/criteria/common.py: `unidentified`).
    unresolved: str | None = None
    # Last possible days of partial dates ("2026-08"); None for full dates.
    start_latest: date | None = None
    end_latest: date | None = None


@dataclass(slots=True, unsafe_hash=True)
class Allergy:
    reference: str
    codes: tuple[Code, ...]
    category: frozenset[str]
    criticality: str | None
    severities: frozenset[str]
    manifestations: frozenset[str]  # concept names of reaction manifestations
    manifestation_codes: tuple[Code, ...]
    recorded: date | None
    negated: bool = False  # "no known drug allergy" style records
    source: str | None = None
    concepts: frozenset[str] = frozenset()  # value sets of the allergen code
    text: str | None = None
    review: frozenset[str] = frozenset()
    clinical_status: str | None = None
    verification_status: str | None = None
    recorded_latest: date | None = None  # last possible day of a partial date


@dataclass(slots=True, unsafe_hash=True)
class ProcedureRecord:
    reference: str
    codes: tuple[Code, ...]
    concepts: frozenset[str]
    performed: date | None
    status: str
    source: str | None = None
    text: str | None = None  # CodeableConcept.text, else the first display
    # Value sets whose review terms the text matches, for a record no value set knows.
    review: frozenset[str] = frozenset()
    performed_latest: date | None = None  # last possible day of a partial date


@dataclass(slots=True, unsafe_hash=True)
class StudyParticipation:
    reference: str
    study: str  # ResearchStudy reference or identifier value
    status: str
    start: date | None
    end: date | None
    source: str | None = None
    # Every name the record gives the study (reference, identifier value, display): the
    # ResearchStudy id is often a server number and the NCT number only in the display.
    names: tuple[str, ...] = ()
    # Last possible days of partial dates ("2026-08"); None for full dates.
    start_latest: date | None = None
    end_latest: date | None = None


@dataclass(slots=True, unsafe_hash=True)
class Problem:
    """A record that could not be read (or fetched): which type, where, and why."""

    resource_type: str
    where: str
    message: str
    # Value sets the unreadable record's codes belong to, when its code could still be read;
    # None when nothing is known (a failed fetch, a record without a readable code).
    concepts: frozenset[str] | None = None
    # The result's date, when an unreadable Observation still shows one: a lab rule must not
    # decide on an older result when this one may be newer (criteria/common.newer_problem).
    day: date | None = None

    def concerns(self, concepts: frozenset[str] | set[str] | None) -> bool:
        return self.concepts is None or concepts is None or bool(self.concepts & concepts)


Fact = (
    Demographics
    | LabResult
    | Diagnosis
    | MedicationExposure
    | Allergy
    | ProcedureRecord
    | StudyParticipation
    | Problem
)


@dataclass(slots=True)
class PatientFacts:
    """Everything known about one patient; built by grouping mapped facts.

    Add facts with `add`/`extend` (or pass them to the constructor): labs, diagnoses and
    medications are also indexed by concept as they arrive, so the ~35 criteria of a trial
    find their records with a dictionary lookup rather than a scan of the whole record.
    """

    reference: str
    demographics: Demographics | None = None
    labs: list[LabResult] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    medications: list[MedicationExposure] = field(default_factory=list)
    allergies: list[Allergy] = field(default_factory=list)
    procedures: list[ProcedureRecord] = field(default_factory=list)
    studies: list[StudyParticipation] = field(default_factory=list)
    # Records of this patient that could not be read: a criterion that would pass on the
    # absence of such records becomes unknown instead.
    problems: list[Problem] = field(default_factory=list)
    # concept -> its records, in the order added (the order of `labs` etc.)
    _labs_by_concept: dict[str, list[LabResult]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _diagnoses_by_concept: dict[str, list[Diagnosis]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _medications_by_concept: dict[str, list[MedicationExposure]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for lab in self.labs:
            _index(self._labs_by_concept, lab)
        for dx in self.diagnoses:
            _index(self._diagnoses_by_concept, dx)
        for med in self.medications:
            _index(self._medications_by_concept, med)

    def add(self, fact: Fact | tuple[LabResult, ...]) -> None:
        """Add a fact, or the results of one Observation and its components."""
        match fact:
            case LabResult():  # most facts: matched first
                self.labs.append(fact)
                _index(self._labs_by_concept, fact)
            case Demographics():
                self.demographics = fact
            case Diagnosis():
                self.diagnoses.append(fact)
                _index(self._diagnoses_by_concept, fact)
            case MedicationExposure():
                self.medications.append(fact)
                _index(self._medications_by_concept, fact)
            case Allergy():
                self.allergies.append(fact)
            case ProcedureRecord():
                self.procedures.append(fact)
            case StudyParticipation():
                self.studies.append(fact)
            case Problem():
                self.problems.append(fact)
            case tuple():  # a panel's components
                for result in fact:
                    self.add(result)

    def problems_with(
        self, *resource_types: str, concepts: frozenset[str] | set[str] | None = None
    ) -> list[Problem]:
        """Unreadable records of these types that may concern these value sets."""
        return [
            p for p in self.problems if p.resource_type in resource_types and p.concerns(concepts)
        ]

    def extend(self, facts: Iterable[Fact]) -> None:
        for fact in facts:
            self.add(fact)

    # Each returns a new list (callers may sort or filter it), in the order the facts were added.
    def labs_for(self, concept: str) -> list[LabResult]:
        return list(self._labs_by_concept.get(concept, ()))

    def diagnoses_for(self, concept: str) -> list[Diagnosis]:
        return list(self._diagnoses_by_concept.get(concept, ()))

    def medications_for(self, concept: str) -> list[MedicationExposure]:
        return list(self._medications_by_concept.get(concept, ()))

    # The value sets with at least one record, as live read-only views (nothing is copied):
    # a computed score asks about some 50 value sets per patient, most with no record, and
    # skips those without building a list for each (criteria/scoring.py).
    def lab_concepts(self) -> KeysView[str]:
        return self._labs_by_concept.keys()

    def diagnosis_concepts(self) -> KeysView[str]:
        return self._diagnoses_by_concept.keys()


def _index(
    by_concept: dict[str, list[Any]], fact: LabResult | Diagnosis | MedicationExposure
) -> None:
    for concept in fact.concepts:
        found = by_concept.get(concept)
        if found is None:
            by_concept[concept] = [fact]
        else:
            found.append(fact)
