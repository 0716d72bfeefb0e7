"""Builders for synthetic FHIR R4 resources: the demo population, benchmarks and tests.

Everything built here is made up. Never put real patient data through these helpers into
the repository.
"""

from __future__ import annotations

from datetime import date
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
LUPUS = "http://cohort-match.org/fhir/CodeSystem/lupus-scores"

Resource = dict[str, Any]


def _ref(patient: str) -> dict[str, str]:
    return {"reference": patient if patient.startswith("Patient/") else f"Patient/{patient}"}


def _day(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else value


def make_patient(pid: str, birth_date: date | str | None, gender: str | None) -> Resource:
    resource: Resource = {"resourceType": "Patient", "id": pid}
    if birth_date is not None:
        resource["birthDate"] = _day(birth_date)
    if gender is not None:
        resource["gender"] = gender
    return resource


# PLR0913 kept on purpose: a test-data factory, one optional keyword per Observation field
# (STYLE.md's `make_observation(loinc=..., value=6.2, unit="g/dL")`), each used by a caller
# (scripts/make_demo_data.py passes them through). Grouping them into value objects would
# make every call site longer and the resource no clearer; the body is flat.
def make_observation(  # noqa: PLR0913
    oid: str,
    patient: str,
    when: date | str,
    *,
    code: str,
    system: str = LOINC,
    display: str | None = None,
    value: float | None = None,
    unit: str | None = None,
    ucum: bool = True,
    comparator: str | None = None,
    text: str | None = None,
    coded: tuple[str, str] | None = None,
    ref_high: float | None = None,
    status: str = "final",
    interpretation: str | None = None,
) -> Resource:
    """An Observation with one of: a quantity, a string (`text`) or a coded value."""
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    resource: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [coding]},
        "subject": _ref(patient),
        "effectiveDateTime": _day(when),
    }
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity["unit"] = unit
            if ucum:
                quantity["system"] = UCUM
                quantity["code"] = unit
        if comparator:
            quantity["comparator"] = comparator
        resource["valueQuantity"] = quantity
    elif text is not None:
        resource["valueString"] = text
    elif coded is not None:
        resource["valueCodeableConcept"] = {"coding": [{"system": coded[0], "code": coded[1]}]}
    if ref_high is not None:
        high: dict[str, Any] = {"value": ref_high}
        if unit is not None:
            high["unit"] = unit
            if ucum:
                high.update(system=UCUM, code=unit)
        resource["referenceRange"] = [{"high": high}]
    if interpretation:
        resource["interpretation"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": interpretation,
                    }
                ]
            }
        ]
    return resource


def make_condition(
    cid: str,
    patient: str,
    *,
    code: str,
    system: str = SNOMED,
    onset: date | str | None = None,
    abatement: date | str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
) -> Resource:
    resource: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": _ref(patient),
    }
    if clinical:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    if verification:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        }
    if onset is not None:
        resource["onsetDateTime"] = _day(onset)
    if abatement is not None:
        resource["abatementDateTime"] = _day(abatement)
    return resource


def make_medication(
    mid: str,
    patient: str,
    *,
    code: str,
    system: str = RXNORM,
    start: date | str | None = None,
    end: date | str | None = None,
    status: str = "completed",
    dose_mg: float | None = None,
    dose_unit: str = "mg",
    per_day: int | None = 1,
    kind: str = "MedicationStatement",
) -> Resource:
    """A MedicationStatement (or MedicationRequest with `kind`) over start..end."""
    resource: Resource = {
        "resourceType": kind,
        "id": mid,
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
        "subject": _ref(patient),
    }
    dosage: dict[str, Any] = {}
    if dose_mg is not None:
        dosage["doseAndRate"] = [
            {
                "doseQuantity": {
                    "value": dose_mg,
                    "unit": dose_unit,
                    "system": UCUM,
                    "code": dose_unit,
                }
            }
        ]
    if per_day is not None:
        dosage["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    period = {k: _day(v) for k, v in (("start", start), ("end", end)) if v is not None}
    if kind == "MedicationStatement":
        if period:
            resource["effectivePeriod"] = period
        if dosage:
            resource["dosage"] = [dosage]
    else:
        resource["intent"] = "order"
        if start is not None:
            resource["authoredOn"] = _day(start)
        if period:
            dosage.setdefault("timing", {}).setdefault("repeat", {})["boundsPeriod"] = period
        if dosage:
            resource["dosageInstruction"] = [dosage]
    return resource


def make_allergy(
    aid: str,
    patient: str,
    *,
    code: str,
    system: str = RXNORM,
    criticality: str | None = None,
    severity: str | None = None,
    manifestation: str | None = None,
    category: str | None = "medication",
    recorded: date | str | None = None,
) -> Resource:
    resource: Resource = {
        "resourceType": "AllergyIntolerance",
        "id": aid,
        "patient": _ref(patient),
        "code": {"coding": [{"system": system, "code": code}]},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
    }
    if category:
        resource["category"] = [category]
    if criticality:
        resource["criticality"] = criticality
    if severity or manifestation:
        reaction: dict[str, Any] = {}
        if severity:
            reaction["severity"] = severity
        reaction["manifestation"] = [
            {"coding": [{"system": SNOMED, "code": manifestation or "271807003"}]}
        ]
        resource["reaction"] = [reaction]
    if recorded is not None:
        resource["recordedDate"] = _day(recorded)
    return resource


def make_procedure(
    pid: str, patient: str, *, code: str, performed: date | str, status: str = "completed"
) -> Resource:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": status,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": _ref(patient),
        "performedDateTime": _day(performed),
    }


def make_research_subject(
    rid: str,
    patient: str,
    *,
    study: str,
    status: str,
    start: date | str,
    end: date | str | None = None,
) -> Resource:
    period = {"start": _day(start)}
    if end is not None:
        period["end"] = _day(end)
    return {
        "resourceType": "ResearchSubject",
        "id": rid,
        "status": status,
        "study": {"reference": f"ResearchStudy/{study}"},
        "individual": _ref(patient),
        "period": period,
    }


def transaction_bundle(resources: list[Resource]) -> Resource:
    """A transaction Bundle that PUTs each resource (loadable into a FHIR server as is)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }
