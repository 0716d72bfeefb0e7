"""MedicationStatement and MedicationRequest -> MedicationExposure.

Orders usually carry a clinical-drug code (RxNorm SCD) rather than the ingredient; the value
sets list both, and a contained Medication's ingredient codes are read as well.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from service.facts import Code, MedicationExposure, Quantity
from service.mappers.common import MappingError, Resource, codes_of, parse_date, quantity_of
from service.terminology import Terminology
from service.units import UnitError

STATEMENT_NOT_COUNTED = frozenset({"entered-in-error", "not-taken", "intended", "unknown"})
REQUEST_NOT_COUNTED = frozenset({"cancelled", "entered-in-error", "draft", "unknown"})
DAYS_PER_UNIT = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}


def map_medication(
    resource: Resource, terms: Terminology, source: str | None = None
) -> MedicationExposure | None:
    kind = resource.get("resourceType")
    recorded = _medication_codes(resource)
    if not recorded:
        return None
    codes, concepts = terms.resolve(recorded)
    if not concepts:
        return None
    status = resource.get("status")
    excluded = STATEMENT_NOT_COUNTED if kind == "MedicationStatement" else REQUEST_NOT_COUNTED
    if not isinstance(status, str) or status in excluded:
        return None
    dosages = resource.get("dosage") if kind == "MedicationStatement" else None
    dosages = dosages or resource.get("dosageInstruction") or []
    dosage = dosages[0] if dosages else {}
    start, end = _period(resource, dosage)
    dose = _dose(dosage)
    per_day = _doses_per_day(dosage)
    potency = terms.glucocorticoid_potency(codes)
    route = codes_of(dosage.get("route"))
    return MedicationExposure(
        reference=f"{kind}/{resource.get('id')}",
        codes=codes,
        concepts=concepts,
        status=status,
        start=start,
        end=end,
        dose=dose,
        doses_per_day=per_day,
        daily_dose_mg=_daily_mg(terms, dose, per_day, potency.strength_mg if potency else None),
        prednisone_factor=potency.prednisone_mg_per_mg if potency else None,
        route=(route[0].display or route[0].code) if route else None,
        source=source,
    )


def _medication_codes(resource: Resource) -> list[Code]:
    if "medicationCodeableConcept" in resource:
        return codes_of(resource["medicationCodeableConcept"])
    if "medicationReference" not in resource:
        raise MappingError("names no medication (medication[x] is required)")
    reference = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("#"):
        return []
    for contained in resource.get("contained") or ():
        if contained.get("id") == reference[1:]:
            found = codes_of(contained.get("code"))
            for ingredient in contained.get("ingredient") or ():
                found += codes_of(ingredient.get("itemCodeableConcept"))
            return found
    raise MappingError(f"medicationReference {reference} is not contained")


def _period(resource: Resource, dosage: dict[str, Any]) -> tuple[Any, Any]:
    if resource.get("resourceType") == "MedicationStatement":
        if "effectiveDateTime" in resource:
            day = parse_date(resource["effectiveDateTime"])
            return day, day
        period = resource.get("effectivePeriod") or {}
        return parse_date(period.get("start")), parse_date(period.get("end"))
    bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
    dispense = resource.get("dispenseRequest") or {}
    validity = dispense.get("validityPeriod") or {}
    start = parse_date(bounds.get("start") or validity.get("start") or resource.get("authoredOn"))
    end = parse_date(bounds.get("end") or validity.get("end"))
    supply = dispense.get("expectedSupplyDuration") or {}
    if end is None and start is not None and isinstance(supply.get("value"), int | float):
        unit = supply.get("code") or supply.get("unit")
        days = supply["value"] * DAYS_PER_UNIT.get(unit, 0) if isinstance(unit, str) else 0
        if days:
            end = start + timedelta(days=days)
    return start, end


def _dose(dosage: dict[str, Any]) -> Quantity | None:
    for entry in dosage.get("doseAndRate") or ():
        if "doseQuantity" in entry:
            return quantity_of(entry["doseQuantity"])
    return None


def _doses_per_day(dosage: dict[str, Any]) -> float | None:
    repeat = (dosage.get("timing") or {}).get("repeat")
    if not repeat:
        return None
    frequency = repeat.get("frequency", 1)
    period = repeat.get("period", 1)
    days = DAYS_PER_UNIT.get(repeat.get("periodUnit", "d"))
    if not isinstance(frequency, int | float) or not isinstance(period, int | float) or not days:
        raise MappingError("dosage timing is not readable")
    return float(frequency) / (float(period) * days)


def _daily_mg(
    terms: Terminology, dose: Quantity | None, per_day: float | None, strength_mg: float | None
) -> float | None:
    """Ingredient milligrams per day: mass doses by UCUM, tablets by the drug's strength."""
    if dose is None or per_day is None or dose.unit is None:
        return None
    try:
        return dose.value * terms.factor(dose.unit, "mg") * per_day
    except UnitError:
        pass
    if strength_mg is not None and dose.unit.strip("{}").lower() in {"tablet", "tab", "tbl"}:
        return dose.value * strength_mg * per_day
    return None
