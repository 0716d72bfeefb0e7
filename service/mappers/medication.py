"""MedicationStatement, MedicationRequest, MedicationAdministration, MedicationDispense ->
MedicationExposure.

Orders usually carry a clinical-drug code (RxNorm SCD) rather than the ingredient; the value
sets list both, and a contained Medication's ingredient codes are read as well. Hospitals
record infusions (IV cyclophosphamide, rituximab) as one MedicationAdministration per dose and
pharmacies record what they handed over as MedicationDispense: all four are one fact type.
An administration at a moment is one dose on its day (`doses_per_day` 1); a dispense starts
when handed over (else when prepared); a statement at a moment (`effectiveDateTime`) covers
that day, unless it is `active` ("taking it as of then"): then its end is left open; an
active statement with no effective[x] is taken as of its `dateAsserted`.
A `medicationReference` names a Medication: a contained one (`#id`), or one sent apart
(`Medication/123`, as Epic and Cerner send orders), which the caller passes in a
`MedicationTable` (service/mappers/medication_table.py: the patient's own list or Bundle, a
Bulk export's Medication file, a FHIR read). Either is read alike: its code and its
ingredients' codes. A referenced Medication that is not available is no reason to drop the
record (unmapped is not absent): it becomes an exposure with an unknown drug, no codes, and
`unresolved` naming the Medication and why it is missing; its `display`, if any, is read for
review terms as the text. Criteria read such a record as "could be" the drug they look for
(service/criteria/common.py: `unidentified`).

When a record states no end, one is derived where the record allows, and `end_basis` says
how (the first that applies):
1. the dosage's bounds: `boundsDuration`, or `count` repetitions at the timing's frequency;
2. a request's `dispenseRequest.expectedSupplyDuration`, a dispense's `daysSupply`;
3. the quantity (dispensed, or the request's `dispenseRequest.quantity`) divided by the dose
   per day, when both are in the same unit (tablets and tablets, mg and g ...);
   for an order, 2 and 3 are per fill: it covers 1 + `numberOfRepeatsAllowed` fills (what
   was prescribed; a dispense covers its own fill only; a `stopped` order, halted before it
   was done, its first fill only), never past its validity period;
4. a request's `dispenseRequest.validityPeriod.end` (no fill can follow it).
A supply of N days starting on day D covers D .. D+N-1. Otherwise `end` stays None and
`criteria/exposure.py` applies the value set's default course or the status rule.

A MedicationRequest with `doNotPerform: true`, or whose intent is `proposal` or `option`,
orders nothing and is dropped like a cancelled one.

Unmapped is not absent: a record whose codes no value set knows (or that has only text) is
kept when its text or a display matches some value set's review terms; it then has no
`concepts`, only `review`, and criteria may say "possible <title>: review". Anything else no
value set knows is dropped (most of a real medication list).
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from service.facts import Code, MedicationExposure, Quantity
from service.mappers.common import (
    MappingError,
    Resource,
    codes_of,
    parse_date,
    parse_date_span,
    quantity_of,
    review_of,
    status_word,
)
from service.mappers.medication_table import MedicationTable, medication_reference
from service.terminology import Terminology
from service.units import UnitError

# Records that do not say the drug was (or is to be) taken, per FHIR R4 status value set.
# R5's codes are listed too (a statement `draft`, a dispense `unfulfilled`): feeds mix versions.
NOT_COUNTED = {
    "MedicationStatement": frozenset(
        {"entered-in-error", "not-taken", "intended", "unknown", "draft"}
    ),
    "MedicationRequest": frozenset({"cancelled", "entered-in-error", "draft", "unknown"}),
    "MedicationAdministration": frozenset({"not-done", "entered-in-error", "unknown"}),
    # `preparation`: not handed over yet; `declined`, `unfulfilled`: never handed over.
    "MedicationDispense": frozenset(
        {"preparation", "cancelled", "entered-in-error", "declined", "unfulfilled", "unknown"}
    ),
}
# Older feeds negate a record with a flag instead of a status: STU3 MedicationStatement
# `taken` ("n": not taken; "unk": not known to be taken), STU3 MedicationAdministration
# `notGiven` and DSTU2 `wasNotGiven`. Such a record says nothing was taken.
NOT_TAKEN_FLAGS = (("taken", ("n", "unk")), ("notGiven", (True,)), ("wasNotGiven", (True,)))
# Requests that order nothing: a suggestion (`proposal`) or one of several alternatives
# (`option`) nobody has chosen (R4 medicationrequest-intent). A `plan` is kept: some EHRs send
# documented home medications as plans. `doNotPerform: true` forbids the drug: never exposure.
NOT_ORDERED_INTENTS = frozenset({"proposal", "option"})
# Every resource type that is a medication record: a rule withholding a verdict on
# unreadable medication records names them all (`unreadable(facts, *MEDICATION_TYPES, ...)`).
MEDICATION_TYPES = tuple(NOT_COUNTED)
# A medication resource type not listed above is read with MedicationRequest's statuses.
REQUEST_NOT_COUNTED = NOT_COUNTED["MedicationRequest"]
# UCUM codes, then the spellings EHRs put in `unit` (daysSupply is often "days" or "Day").
DAYS_PER_UNIT = {
    "s": 1 / 86400,
    "min": 1 / 1440,
    "h": 1 / 24,
    "d": 1,
    "wk": 7,
    "mo": 30,
    "a": 365,
    "day": 1,
    "days": 1,
    "week": 7,
    "weeks": 7,
    "month": 30,
    "months": 30,
    "天": 1,
    "日": 1,
    "周": 7,
    "月": 30,
}
# Count units a dose and a supply may both be written in: "{tablet}", "TAB", "tabs" ...
COUNT_UNITS = {
    "tablet": "tablet",
    "tablets": "tablet",
    "tab": "tablet",
    "tabs": "tablet",
    "tbl": "tablet",
    "片": "tablet",
    "capsule": "capsule",
    "capsules": "capsule",
    "cap": "capsule",
    "caps": "capsule",
    "粒": "capsule",
    "vial": "vial",
    "vials": "vial",
    "支": "vial",
    "syringe": "syringe",
    "syringes": "syringe",
    "each": "each",
    "ea": "each",
    "1": "each",
}


def map_medication(
    resource: Resource,
    terms: Terminology,
    source: str | None = None,
    medications: MedicationTable | None = None,
) -> MedicationExposure | None:
    """The exposure a medication record states, or None for one that does not count (its
    status) or that no criterion reads (a drug no value set knows, no review term)."""
    kind = str(resource.get("resourceType"))
    medication, unresolved = _medication(resource, medications)
    recorded = _medication_codes(resource, medication, terms)
    text = _medication_text(resource, medication, recorded)
    if not recorded and not text and unresolved is None:
        return None
    codes, concepts = terms.resolve(recorded)
    review = frozenset() if concepts else review_of(terms, {"text": text}, recorded, "medication")
    if not concepts and not review and unresolved is None:
        return None
    status = resource.get("status")
    if not isinstance(status, str) or not status.strip():
        return None
    # Codes as some feeds spell them ("Active", "ENTERED_IN_ERROR"), read as FHIR's.
    status = status_word(status)
    resource = {**resource, "status": status}
    if isinstance(intent := resource.get("intent"), str):
        resource["intent"] = status_word(intent)
    if status in NOT_COUNTED.get(kind, REQUEST_NOT_COUNTED):
        return None
    if resource.get("doNotPerform") is True or resource.get("intent") in NOT_ORDERED_INTENTS:
        return None
    if any(resource.get(flag) in values for flag, values in NOT_TAKEN_FLAGS):
        return None
    dosage = _dosage(resource, kind)
    (start, start_latest), (end, end_latest) = _period(resource, kind, dosage)
    dose: Quantity | None
    per_day: float | None
    if kind == "MedicationAdministration":
        # One administration is one dose on its day (several on a day: summed by the rule).
        dose = quantity_of(dosage.get("dose"))
        per_day = 1.0 if start is not None and end in (None, start) else None
        exact = True
    else:
        dose, (per_day, exact) = _dose(dosage), _doses_per_day(dosage)
    end_basis = None
    if end is None and start is not None:
        # A supply lasts a known number of days only at a known rate (not "1-2 a day").
        rate = per_day if exact else None
        end, end_basis = _derived_end(resource, kind, dosage, start, dose, rate, terms)
        if end is not None and start_latest is not None:
            # Started "2026-11": the derived end is as uncertain as the start.
            end_latest = _derived_end(resource, kind, dosage, start_latest, dose, rate, terms)[0]
    potency = terms.glucocorticoid_potency(codes)
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
        route=_route(dosage.get("route")),
        source=source,
        resource_type=kind,
        text=text,
        review=review,
        end_basis=end_basis,
        unresolved=unresolved,
        start_latest=start_latest,
        end_latest=end_latest,
    )


def _medication(
    resource: Resource, medications: MedicationTable | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The Medication a `medicationReference` names (contained, or from `medications`), and
    why it could not be read when it names one outside the record that is not available."""
    if "medicationCodeableConcept" in resource:
        return None, None
    if "medicationReference" not in resource:
        raise MappingError("names no medication (medication[x] is required)")
    value = resource["medicationReference"]
    if not isinstance(value, dict):
        raise MappingError("medicationReference is not a Reference")
    contained = _contained_medication(resource)
    if contained is not None:
        return contained, None
    reference = medication_reference(resource)
    if reference is None:
        return None, "a Medication by identifier or display only"
    found, why = (medications or _NONE).find(reference)
    return found, None if found is not None else why


_NONE = MedicationTable()


def _medication_codes(
    resource: Resource, medication: dict[str, Any] | None, terms: Terminology
) -> list[Code]:
    if "medicationCodeableConcept" in resource:
        return codes_of(resource["medicationCodeableConcept"], terms)
    if medication is None:
        return []
    found = codes_of(medication.get("code"), terms)
    for ingredient in medication.get("ingredient") or ():
        found += codes_of(ingredient.get("itemCodeableConcept"), terms)
    return found


def _contained_medication(resource: Resource) -> dict[str, Any] | None:
    """The contained Medication a `#id` reference names; None for any other reference."""
    reference = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    for contained in resource.get("contained") or ():
        if contained.get("id") == reference[1:]:
            return contained  # type: ignore[no-any-return]
    raise MappingError(f"medicationReference {reference} is not contained")


def _medication_text(
    resource: Resource, medication: dict[str, Any] | None, recorded: list[Code]
) -> str | None:
    """What a person reads as the drug: the concept's text, else its first display (the
    Medication's, or the reference's display)."""
    concept = resource.get("medicationCodeableConcept")
    if concept is None:
        concept = (medication or {}).get("code")
    text = concept.get("text") if isinstance(concept, dict) else None
    if not isinstance(text, str) or not text.strip():
        text = next((c.display for c in recorded if c.display), None)
    if text is None:
        display = (resource.get("medicationReference") or {}).get("display")
        text = display if isinstance(display, str) and display.strip() else None
    return text


def _dosage(resource: Resource, kind: str) -> dict[str, Any]:
    """The first Dosage (statement: `dosage`; request, dispense: `dosageInstruction`) or an
    administration's `dosage` (one object, not a list)."""
    if kind == "MedicationAdministration":
        dosage = resource.get("dosage") or {}
        return dosage if isinstance(dosage, dict) else {}
    field = "dosage" if kind == "MedicationStatement" else "dosageInstruction"
    dosages = resource.get(field) or []
    return dosages[0] if dosages else {}


Span = tuple[date | None, date | None]


def _period(resource: Resource, kind: str, dosage: dict[str, Any]) -> tuple[Span, Span]:
    """(start, end) as the record states them, each as (first, last) possible day: the last
    only for a partial date ("2026-11"; `parse_date_span`)."""
    if kind in ("MedicationStatement", "MedicationAdministration"):
        if "effectiveDateTime" in resource:
            day = parse_date_span(resource["effectiveDateTime"])
            # "Taking it as of that day": an active statement says nothing of its end.
            return day, (None, None) if _running_statement(resource, kind) else day
        if "effectivePeriod" not in resource and _running_statement(resource, kind):
            # No effective[x]: an active statement says the drug was taken when asserted.
            return parse_date_span(resource.get("dateAsserted")), (None, None)
        period = resource.get("effectivePeriod") or {}
        return parse_date_span(period.get("start")), parse_date_span(period.get("end"))
    bounds = _repeat(dosage).get("boundsPeriod") or {}
    if kind == "MedicationDispense":
        handed = resource.get("whenHandedOver") or resource.get("whenPrepared")
        return parse_date_span(bounds.get("start") or handed), parse_date_span(bounds.get("end"))
    validity = (resource.get("dispenseRequest") or {}).get("validityPeriod") or {}
    start = parse_date_span(
        bounds.get("start") or validity.get("start") or resource.get("authoredOn")
    )
    return start, parse_date_span(bounds.get("end"))


def _running_statement(resource: Resource, kind: str) -> bool:
    return kind == "MedicationStatement" and resource.get("status") == "active"


def _derived_end(
    resource: Resource,
    kind: str,
    dosage: dict[str, Any],
    start: date,
    dose: Quantity | None,
    per_day: float | None,
    terms: Terminology,
) -> tuple[date | None, str | None]:
    """An end the record implies, and how it was found (the module docstring's order)."""
    repeat = _repeat(dosage)
    if not (
        "boundsDuration" in repeat
        or "count" in repeat
        or "dispenseRequest" in resource
        or "daysSupply" in resource
        or "quantity" in resource
    ):
        return None, None  # most records: nothing to derive an end from
    if (days := _days_of(repeat.get("boundsDuration"))) is not None:
        return _after(start, days), f"dosage boundsDuration {_fmt_days(days)} days"
    count = repeat.get("count")
    if isinstance(count, int) and count > 0 and per_day:
        days = count / per_day
        return _after(start, days), f"{count} doses at {per_day:g}/day: {_fmt_days(days)} days"
    dispense = resource.get("dispenseRequest") or {}
    supply = dispense.get("expectedSupplyDuration") if kind == "MedicationRequest" else None
    if kind == "MedicationDispense":
        supply = resource.get("daysSupply")
    basis: str | None = None
    if (days := _days_of(supply, default_unit="d")) is not None:
        name = "daysSupply" if kind == "MedicationDispense" else "expectedSupplyDuration"
        basis = f"{name} {_fmt_days(days)} days"
    else:
        amount = quantity_of(resource.get("quantity") if kind == "MedicationDispense" else None)
        amount = amount or quantity_of(dispense.get("quantity"))
        if (days := _supply_days(amount, dose, per_day, terms)) is not None:
            assert amount is not None and dose is not None
            basis = (
                f"quantity {amount.value:g} {amount.unit or ''} / {dose.value:g} x {per_day:g}"
                f"/day = {_fmt_days(days)} days"
            )
    validity_end = parse_date((dispense.get("validityPeriod") or {}).get("end"))
    if kind != "MedicationRequest" or (validity_end is not None and validity_end < start):
        validity_end = None
    if days is not None and basis is not None:
        refills = dispense.get("numberOfRepeatsAllowed")
        if resource.get("status") == "stopped":
            # Stopped before all was done (R4): the refills may never have been filled.
            refills = None
        return _order_end(start, days, basis, refills, validity_end)
    if validity_end is not None:
        return validity_end, "dispenseRequest.validityPeriod end"
    return None, None


def _order_end(
    start: date, days: float, basis: str, refills: Any, validity_end: date | None
) -> tuple[date, str]:
    """The end of a supply; an order covers its refills too (what the prescriber ordered),
    but no fill can follow the order's validity period."""
    if isinstance(refills, int) and not isinstance(refills, bool) and refills > 0:
        days *= 1 + refills
        basis += f" x {1 + refills} fills (numberOfRepeatsAllowed {refills})"
    end = _after(start, days)
    if validity_end is not None and validity_end < end:
        return validity_end, basis + ", cut at the validityPeriod end"
    return end, basis


def _repeat(dosage: dict[str, Any]) -> dict[str, Any]:
    return (dosage.get("timing") or {}).get("repeat") or {}


def _after(start: date, days: float) -> date:
    """The last day of a supply of `days` days beginning on `start` (at least `start`)."""
    return start + timedelta(days=max(math.ceil(days - 1e-9) - 1, 0))


def _fmt_days(days: float) -> str:
    return f"{days:g}" if days == int(days) else f"{days:.1f}"


def _days_of(value: Any, default_unit: str | None = None) -> float | None:
    """Days in a Duration/Quantity ({value, unit|code}); None if unreadable or not positive."""
    if not isinstance(value, dict):
        return None
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
        return None
    units = [u for u in (value.get("code"), value.get("unit")) if isinstance(u, str)]
    for unit in units or ([default_unit] if default_unit else []):
        factor = DAYS_PER_UNIT.get(unit.strip().lower()) or DAYS_PER_UNIT.get(unit.strip())
        if factor:
            return float(number) * factor
    return None


def _supply_days(
    amount: Quantity | None, dose: Quantity | None, per_day: float | None, terms: Terminology
) -> float | None:
    """How many days `amount` lasts at `dose` x `per_day`, when their units can be compared."""
    if amount is None or dose is None or not per_day or dose.value <= 0 or amount.value <= 0:
        return None
    ratio = _unit_ratio(amount.unit, dose.unit, terms)
    if ratio is None:
        return None
    return amount.value * ratio / (dose.value * per_day)


def _unit_ratio(unit: str | None, target: str | None, terms: Terminology) -> float | None:
    """The factor from `unit` to `target`: 1 for the same count unit (tablets ...), else UCUM."""
    count_a, count_b = _count_unit(unit), _count_unit(target)
    if count_a is not None or count_b is not None:
        return 1.0 if count_a == count_b else None
    if unit is None or target is None:
        return None
    try:
        return terms.factor(unit, target)
    except UnitError:
        return None


def _count_unit(unit: str | None) -> str | None:
    if unit is None:
        return "each"  # a bare number of units
    return COUNT_UNITS.get(unit.strip().strip("{}").strip().lower())


def _dose(dosage: dict[str, Any]) -> Quantity | None:
    for entry in dosage.get("doseAndRate") or ():
        if "doseQuantity" in entry:
            return quantity_of(entry["doseQuantity"])
    return None


def _doses_per_day(dosage: dict[str, Any]) -> tuple[float | None, bool]:
    """Doses a day the dosage states, and whether that rate is exact.

    A range ("1-2 times a day": `frequencyMax`; "every 12-24 h": `periodMax`) gives its
    lowest rate, so a daily dose read from it is a lower bound (never more than was given),
    and not exact: no supply length is derived from it. A dose taken as needed
    (`asNeededBoolean`, `asNeededCodeableConcept`, R5 `asNeeded`/`asNeededFor`) has no daily
    rate: its frequency is a ceiling. A timing sent only as a code (HL7 GTSAbbreviation `BID`,
    `QD`, `QOD` ...) is read by `TIMING_CODES`."""
    if dosage.get("asNeededBoolean") is True or dosage.get("asNeeded") is True:
        return None, False
    if dosage.get("asNeededCodeableConcept") or dosage.get("asNeededFor"):
        return None, False
    timing = dosage.get("timing") or {}
    repeat = timing.get("repeat")
    if not repeat:
        return _timing_code(timing.get("code")), True
    frequency = repeat.get("frequency", 1)
    period = repeat.get("period", 1)
    days = DAYS_PER_UNIT.get(repeat.get("periodUnit", "d"))
    if not isinstance(frequency, int | float) or not isinstance(period, int | float) or not days:
        raise MappingError("dosage timing is not readable")
    if not repeat.get("frequency") and not repeat.get("period") and not repeat.get("periodUnit"):
        # Bounds or count only: how long, not how often.
        return _timing_code(timing.get("code")), True
    longest = repeat.get("periodMax")
    if isinstance(longest, int | float) and not isinstance(longest, bool) and longest > period:
        period = longest
    ranged = period != repeat.get("period", 1) or (
        isinstance(repeat.get("frequencyMax"), int) and repeat["frequencyMax"] > frequency
    )
    return float(frequency) / (float(period) * days), not ranged


# HL7 v3 GTSAbbreviation timings (and the same abbreviations sent without a system), as doses
# a day: a timing sent as `timing.code` alone.
TIMING_CODES = {
    "QD": 1.0,
    "AM": 1.0,
    "PM": 1.0,
    "QHS": 1.0,
    "BID": 2.0,
    "TID": 3.0,
    "QID": 4.0,
    "QOD": 0.5,
    "Q4H": 6.0,
    "Q6H": 4.0,
    "Q8H": 3.0,
    "Q12H": 2.0,
    "Q24H": 1.0,
}
GTS_SYSTEMS = (
    "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
    "urn:oid:2.16.840.1.113883.5.1022",
    None,
    "",
)


def _timing_code(concept: Any) -> float | None:
    """Doses a day of a GTSAbbreviation timing code (or the same code sent without a system)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings or ():
        code = coding.get("code") if isinstance(coding, dict) else None
        if isinstance(code, str) and coding.get("system") in GTS_SYSTEMS:
            if (found := TIMING_CODES.get(code.strip().upper())) is not None:
                return found
    return None


def _route(concept: Any) -> str | None:
    """The route as a person reads it: the first coding's display or code, else the text."""
    route = codes_of(concept)
    if route:
        return route[0].display or route[0].code
    text = concept.get("text") if isinstance(concept, dict) else None
    return text if isinstance(text, str) and text.strip() else None


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
    if strength_mg is not None and _count_unit(dose.unit) == "tablet":
        return dose.value * strength_mg * per_day
    return None
