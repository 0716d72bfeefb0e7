"""Condition -> Diagnosis."""

from __future__ import annotations

from service.facts import Diagnosis
from service.mappers.common import MappingError, Resource, codes_of, parse_date, status_code
from service.terminology import Terminology

# Records that assert nothing about the patient (FHIR R4 condition-ver-status).
NOT_COUNTED = frozenset({"refuted", "entered-in-error"})


def map_condition(
    resource: Resource, terms: Terminology, source: str | None = None
) -> Diagnosis | None:
    verification = status_code(resource.get("verificationStatus"))
    if verification in NOT_COUNTED:
        return None
    recorded = codes_of(resource.get("code"))
    if not recorded:
        # A diagnosis written only as text may be exactly what a criterion excludes: it is
        # reported (and withholds diagnosis-based passes), never silently dropped.
        raise MappingError("diagnosis has no code (text only or empty); review it")
    codes, concepts = terms.resolve(recorded)
    if not concepts:
        return None
    return Diagnosis(
        reference=f"Condition/{resource.get('id')}",
        codes=codes,
        concepts=concepts,
        clinical_status=status_code(resource.get("clinicalStatus")),
        verification_status=verification,
        onset=parse_date(
            resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
        ),
        abatement=parse_date(
            resource.get("abatementDateTime")
            or (resource.get("abatementPeriod") or {}).get("end")
            or (resource.get("abatementPeriod") or {}).get("start")
        ),
        recorded=parse_date(resource.get("recordedDate")),
        source=source,
    )
