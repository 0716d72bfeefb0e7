"""Observation -> LabResult (labs, vital signs, scores and graded assessments).

Only results whose code belongs to a value set the trials use are kept; the rest of a
real EHR's Observations (most of them) are dropped after one dictionary lookup.
"""

from __future__ import annotations

from typing import Any

from service.facts import Code, LabResult, Qualitative, Quantity
from service.mappers.common import (
    MappingError,
    Resource,
    codes_of,
    parse_date,
    quantity_of,
)
from service.terminology import Terminology

# FHIR R4 ObservationStatus: results that are final enough to act on.
COUNTED_STATUSES = frozenset({"final", "amended", "corrected"})
GRADES = frozenset("ABCDE")


def map_observation(
    resource: Resource, terms: Terminology, source: str | None = None
) -> LabResult | None:
    """The result, or None when the code is not one the trials use or it does not count."""
    code = resource.get("code")
    if code is None:
        raise MappingError("has no code (Observation.code is required)")
    if not terms.may_match(code):
        return None  # most of a real EHR's Observations: dropped before any object is built
    recorded = codes_of(code)
    if not recorded:
        return None
    codes, concepts = terms.resolve(recorded)
    if not concepts:
        return None
    status = resource.get("status")
    if status not in COUNTED_STATUSES:
        return None  # preliminary, registered, cancelled, entered-in-error, unknown
    reference = f"Observation/{resource.get('id')}"
    effective = parse_date(
        resource.get("effectiveDateTime")
        or (resource.get("effectivePeriod") or {}).get("start")
        or resource.get("effectiveInstant")
        or resource.get("issued")
    )
    quantity, text, coded = _value(resource)
    qualitative = _qualitative(terms, text, coded, resource.get("interpretation"))
    grade = _grade(text, coded)
    concept = terms.quantity_concept(concepts)
    if quantity is not None and concept is not None:
        quantity = _canonical(terms, concept, quantity)
    return LabResult(
        reference=reference,
        codes=codes,
        concepts=concepts,
        effective=effective,
        status=status,
        quantity=quantity,
        text=text,
        qualitative=qualitative,
        grade=grade,
        ref_high=_reference_high(
            terms, concept, resource.get("referenceRange"), quantity.unit if quantity else None
        ),
        source=source,
    )


def _value(resource: Resource) -> tuple[Quantity | None, str | None, list[Code]]:
    if "valueQuantity" in resource:
        return quantity_of(resource["valueQuantity"]), None, []
    if "valueInteger" in resource:
        number = resource["valueInteger"]
        if isinstance(number, bool) or not isinstance(number, int):
            raise MappingError(f"valueInteger is not an integer: {number!r}")
        return Quantity(float(number), None), None, []
    if "valueString" in resource:
        text = resource["valueString"]
        if not isinstance(text, str):
            raise MappingError("valueString is not a string")
        return None, text.strip(), []
    if "valueCodeableConcept" in resource:
        concept = resource["valueCodeableConcept"]
        coded = codes_of(concept)
        text = concept.get("text") or (coded[0].display if coded else None)
        return None, text, coded
    return None, None, []


def _qualitative(
    terms: Terminology, text: str | None, coded: list[Code], interpretation: Any
) -> Qualitative | None:
    for code in coded:
        found = terms.qualitative_of_code(code.system, code.code)
        if found:
            return found
    if text:
        found = terms.qualitative_of_text(text)
        if found:
            return found
    for concept in interpretation or ():
        for code in codes_of(concept):
            found = terms.qualitative_of_code(code.system, code.code)
            if found:
                return found
    return None


def _grade(text: str | None, coded: list[Code]) -> str | None:
    if not coded and not text:
        return None  # a number: most results
    for candidate in [code.code for code in coded] + [text or ""]:
        letter = candidate.strip().upper().removeprefix("GRADE ").strip()
        if letter in GRADES:
            return letter
    return None


def _canonical(terms: Terminology, concept: str, quantity: Quantity) -> Quantity:
    info = terms.valuesets[concept]
    unit = quantity.unit if quantity.unit is not None else None
    if unit is None and info.canonical_unit is not None and info.canonical_unit.startswith("{"):
        unit = info.canonical_unit  # scores and ratios are often sent without a unit
    converted = terms.canonical(concept, quantity.value, unit)
    if converted is None:
        return quantity
    # Built directly: dataclasses.replace costs several times more, once per result.
    return Quantity(quantity.value, quantity.unit, quantity.comparator, converted[0], converted[1])


def _reference_high(
    terms: Terminology, concept: str | None, ranges: Any, value_unit: str | None
) -> Quantity | None:
    """The first reference range's upper limit; without its own unit, the value's unit."""
    for entry in ranges or ():
        high = quantity_of(entry.get("high"))
        if high is None:
            continue
        if high.unit is None:
            high = Quantity(
                high.value, value_unit, high.comparator, high.canonical_value, high.canonical_unit
            )
        return _canonical(terms, concept, high) if concept else high
    return None
