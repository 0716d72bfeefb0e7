"""Results as hospital labs send them: raw Observation JSON, mapped, then judged.

`lab(...)` builds an Observation the way an LIS emits one (full timestamp with an offset,
Chinese text, several reference ranges with `type` and `appliesTo`, interpretation codes).
`judge(resources, criterion)` maps them with the real mappers and evaluates one criterion.

While the Observation mapper does not yet fill `LabResult.effective_at` and `ref_ranges`
(work in flight on another branch), `judge` fills those two fields from the same JSON with the
small reader below; once the mapper fills them, the reader is not used.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from service.criteria.engine import evaluate_criterion
from service.criteria.verdict import CriterionResult
from service.facts import LabResult, Quantity, RefRange
from tests.conftest import PATIENT, context, facts_of, load_nct, load_terms

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
FEMALE, MALE = "248152002", "248153007"  # SNOMED CT appliesTo codes

Resource = dict[str, Any]
_count = iter(range(1, 10**6))


def lab(
    code: str,
    value: float | None = None,
    unit: str | None = None,
    *,
    at: str = "2026-11-20T08:15:00+08:00",
    comparator: str | None = None,
    string: str | None = None,
    ranges: list[Resource] | None = None,
    interpretation: str | None = None,
    text: str | None = None,
    rid: str | None = None,
) -> Resource:
    """One Observation as a lab system sends it."""
    resource: Resource = {
        "resourceType": "Observation",
        "id": rid or f"lab{next(_count)}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": text or code},
        "subject": {"reference": PATIENT},
        "effectiveDateTime": at,
        "issued": at,
    }
    if value is not None:
        quantity: Resource = {"value": value}
        if unit is not None:
            quantity |= {"unit": unit, "system": UCUM, "code": unit}
        if comparator:
            quantity["comparator"] = comparator
        resource["valueQuantity"] = quantity
    if string is not None:
        resource["valueString"] = string
    if ranges:
        resource["referenceRange"] = ranges
    if interpretation:
        resource["interpretation"] = [
            {"coding": [{"system": INTERPRETATION, "code": interpretation}]}
        ]
    return resource


def ref_range(
    low: float | None,
    high: float | None,
    unit: str | None = None,
    *,
    meaning: str | None = None,
    sex: str | None = None,
    age: tuple[float, float] | None = None,
    text: str | None = None,
) -> Resource:
    """An Observation.referenceRange: `meaning` normal/treatment/..., `sex` a SNOMED code."""
    entry: Resource = {}
    for key, number in (("low", low), ("high", high)):
        if number is not None:
            entry[key] = {"value": number} | (
                {"unit": unit, "system": UCUM, "code": unit} if unit else {}
            )
    if meaning:
        entry["type"] = {"coding": [{"system": RANGE_MEANING, "code": meaning}]}
    if sex:
        entry["appliesTo"] = [{"coding": [{"system": SNOMED, "code": sex}]}]
    if age:
        entry["age"] = {
            "low": {"value": age[0], "unit": "a", "system": UCUM, "code": "a"},
            "high": {"value": age[1], "unit": "a", "system": UCUM, "code": "a"},
        }
    if text:
        entry["text"] = text
    return entry


def judge(resources: list[Resource], criterion: str) -> CriterionResult:
    """Map the resources (a Patient among them, if the rule needs one) and judge."""
    facts = facts_of(resources)
    raw = {f"Observation/{r['id']}": r for r in resources if r["resourceType"] == "Observation"}
    labs = [_fill_pending(result, raw.get(result.reference)) for result in facts.labs]
    filled = facts_of([r for r in resources if r["resourceType"] != "Observation"])
    filled.extend(labs)
    return evaluate_criterion(load_nct().criterion(criterion), filled, context())


def _fill_pending(result: LabResult, raw: Resource | None) -> LabResult:
    if raw is None:
        return result
    changes: dict[str, Any] = {}
    when = raw.get("effectiveDateTime")
    if result.effective_at is None and isinstance(when, str) and "T" in when:
        changes["effective_at"] = datetime.fromisoformat(when)
    if not result.ref_ranges and raw.get("referenceRange"):
        changes["ref_ranges"] = tuple(_range(result, entry) for entry in raw["referenceRange"])
    return dataclasses.replace(result, **changes) if changes else result


def _range(result: LabResult, entry: Resource) -> RefRange:
    terms = load_terms()
    concept = terms.quantity_concept(result.concepts)
    value_unit = result.quantity.unit if result.quantity else None

    def limit(raw: Resource | None) -> Quantity | None:
        if raw is None:
            return None
        unit = raw.get("code") or raw.get("unit") or value_unit
        converted = terms.canonical(concept, raw["value"], unit) if concept else None
        return Quantity(raw["value"], unit, None, *(converted if converted else (None, None)))

    codes = [c["code"] for a in entry.get("appliesTo", []) for c in a.get("coding", [])]
    kind = [c["code"] for c in entry.get("type", {}).get("coding", [])]
    age = entry.get("age") or {}
    return RefRange(
        low=limit(entry.get("low")),
        high=limit(entry.get("high")),
        type=kind[0] if kind else None,
        applies_to=tuple(codes),
        sex="female" if FEMALE in codes else "male" if MALE in codes else None,
        age_low_years=(age.get("low") or {}).get("value"),
        age_high_years=(age.get("high") or {}).get("value"),
        text=entry.get("text"),
    )


def patient(birth: str = "1990-03-15", gender: str = "female") -> Resource:
    return {
        "resourceType": "Patient",
        "id": PATIENT.removeprefix("Patient/"),
        "birthDate": birth,
        "gender": gender,
    }
