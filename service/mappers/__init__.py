"""FHIR R4 resources (as parsed JSON) -> normalized facts. Pure functions; no I/O.

    map_resource(resource, terms, medications=table) -> Mapped | None

returns the patient the fact belongs to and the fact, or None for a resource no criterion
can use (most Observations of a real EHR). A resource that cannot be read raises
`MappingError`; the caller records it as a `Problem` for that patient and goes on.

Medication resources name no patient and map to no fact: medication records name them by
reference, and the caller gathers them into a `MedicationTable` (SHARED_TYPES;
service/mappers/medication_table.py) that `map_resource` passes to the medication mapper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from service.facts import Fact, LabResult, Problem
from service.mappers.allergy import map_allergy
from service.mappers.common import (
    MappingError,
    Resource,
    codes_of,
    parse_date,
    patient_reference,
    review_of,
)
from service.mappers.condition import map_condition
from service.mappers.medication import map_medication
from service.mappers.medication_table import MedicationTable
from service.mappers.observation import map_observation, observation_time
from service.mappers.patient import map_patient
from service.mappers.procedure import map_procedure
from service.mappers.research_subject import map_research_subject
from service.terminology import Terminology, remember

__all__ = [
    "SHARED_TYPES",
    "SUBJECT_FIELD",
    "Mapped",
    "MappingError",
    "MedicationTable",
    "map_resource",
    "problem_for",
    "relevant",
    "subject_of",
]

# Where each resource type names its patient (FHIR R4).
SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "MedicationStatement": "subject",
    "MedicationRequest": "subject",
    "MedicationAdministration": "subject",
    "MedicationDispense": "subject",
    "AllergyIntolerance": "patient",
    "Procedure": "subject",
    "ResearchSubject": "individual",
}

# Resource types of no patient that patients' records name by reference: kept beside them,
# for every patient (a sweep's side table), never mapped to a fact of their own.
SHARED_TYPES = ("Medication",)

# (resource, terms, source) -> fact or None; `source` is where the record was read, if not
# from its own reference.
Mapper = Callable[[Resource, Terminology, str | None], Any]
MAPPERS: dict[str, Mapper] = {
    "Observation": map_observation,
    "Condition": map_condition,
    "MedicationStatement": map_medication,
    "MedicationRequest": map_medication,
    "MedicationAdministration": map_medication,
    "MedicationDispense": map_medication,
    "AllergyIntolerance": map_allergy,
    "Procedure": map_procedure,
    "ResearchSubject": lambda resource, _terms, source: map_research_subject(resource, source),
}


@dataclass(slots=True, unsafe_hash=True)  # not frozen: one per record (see facts.py)
class Mapped:
    patient: str
    fact: Fact | tuple[LabResult, ...]  # a tuple: an Observation's results and its components'


def subject_of(resource: Resource) -> str | None:
    """The `Patient/<id>` a resource belongs to, or None if it names none."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        identifier = resource.get("id")
        return f"Patient/{identifier}" if isinstance(identifier, str) and identifier else None
    return _subject(resource, kind)


def _subject(resource: Resource, kind: Any) -> str | None:
    """`subject_of` a resource that is not a Patient, its type already read."""
    field = SUBJECT_FIELD.get(kind) if isinstance(kind, str) else None
    return patient_reference(resource.get(field)) if field else None


def relevant(resource: Resource, terms: Terminology) -> bool:
    """Whether a screen reads the resource: a Patient, a type some mapper reads, a Medication
    (medication records name it), and for Observations a code in some value set (most of a
    real EHR's are not)."""
    kind = resource.get("resourceType")
    if kind == "Observation":
        return _code_may_match(resource.get("code"), terms) or _component_may_match(resource, terms)
    return kind == "Patient" or kind in MAPPERS or kind in SHARED_TYPES


def _code_may_match(code: Any, terms: Terminology) -> bool:
    """`terms.may_match(code)`, read once per distinct code (keyed by its JSON): stage 1 asks
    it of every Observation line kept, and a population repeats a few hundred codes."""
    try:
        key = orjson.dumps(code)
    except TypeError:  # orjson.JSONEncodeError: a caller's own object
        return terms.may_match(code)
    memo = terms.memo("may_match")
    found = memo.get(key)
    if found is None:
        found = terms.may_match(code)
        remember(memo, key, found)
    return found


def _component_may_match(resource: Resource, terms: Terminology) -> bool:
    """Whether a component of an Observation has a code in some value set (a CBC panel's
    WBC): the panel is read for it."""
    components = resource.get("component")
    if not isinstance(components, list):
        return components is not None  # malformed: read, to be reported
    return any(
        not isinstance(part, dict) or terms.may_match(part.get("code")) for part in components
    )


def map_resource(
    resource: Resource,
    terms: Terminology,
    source: str | None = None,
    medications: MedicationTable | None = None,
) -> Mapped | None:
    """Map one resource. Raises MappingError (naming the resource) when it cannot be read.
    `medications`: the Medication resources medication records may name by reference."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        try:
            demographics = map_patient(resource)
        except (MappingError, TypeError, AttributeError, ValueError) as exc:
            raise MappingError(f"Patient/{resource.get('id')}: {exc}") from exc
        return Mapped(demographics.reference, demographics)
    mapper = MAPPERS.get(kind) if isinstance(kind, str) else None
    if mapper is None:
        return None
    patient = _subject(resource, kind)
    reference = f"{kind}/{resource.get('id')}"  # what every mapper names its fact
    if source == reference:
        source = None  # fetched resources are read "from" their own reference
    try:
        if mapper is map_medication:
            fact = map_medication(resource, terms, source, medications)
        else:
            fact = mapper(resource, terms, source)
    except (MappingError, TypeError, AttributeError, ValueError, KeyError) as exc:
        raise MappingError(f"{reference}: {exc}") from exc
    if fact is None:
        return None
    if patient is None:
        raise MappingError(f"{reference}: names no patient")
    return Mapped(patient, fact)


def problem_for(
    resource: Any, message: str, source: str | None, terms: Terminology | None = None
) -> Mapped | None:
    """A Problem fact for the patient of an unreadable resource, if the patient is known.

    When the record's code can still be read, the Problem names the value sets it belongs
    to, so it withholds only the verdicts it could have changed.
    """
    if not isinstance(resource, dict):
        return None
    try:
        patient = subject_of(resource)
    except (TypeError, AttributeError):
        return None
    if patient is None:
        return None
    kind = resource.get("resourceType")
    concepts: frozenset[str] | None = None
    if terms is not None:
        try:
            field = "medicationCodeableConcept" if "Medication" in str(kind) else "code"
            codes = codes_of(resource.get(field), terms)
            concepts = terms.resolve(codes)[1] if codes else None
            if concepts == frozenset():  # unmapped is not absent: what its text suggests
                concepts = review_of(terms, resource.get(field), codes)
        except (MappingError, TypeError, AttributeError):
            concepts = None
    return Mapped(patient, Problem(str(kind), source or "", message, concepts, _day_of(resource)))


def _day_of(resource: dict[str, Any]) -> date | None:
    """An unreadable Observation's date, read as the mapper reads a result's time, if it can
    still be read (else None: undated)."""
    if resource.get("resourceType") != "Observation":
        return None
    try:
        return parse_date(observation_time(resource))
    except MappingError:
        return None
    period = resource.get("effectivePeriod")
    candidates = [
        resource.get("effectiveDateTime"),
        resource.get("effectiveInstant"),
        period.get("start") if isinstance(period, dict) else None,
        period.get("end") if isinstance(period, dict) else None,
        resource.get("issued"),
    ]
    for value in candidates:
        if value is None:
            continue
        try:
            return parse_date(value)
        except MappingError:
            continue
    return None
