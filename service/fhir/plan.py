"""What to ask a FHIR server for about one patient, or a population: a `FetchPlan`.

Pure data in FHIR terms (Observation codes, resource types, the search parameter naming the
patient); which plan a trial needs is decided above the client (service/fetching.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES_PER_QUERY", "PATIENT_PARAM", "REFERENCED_TYPES", "FetchPlan"]

# How each type is searched by patient (FHIR R4 search parameters).
PATIENT_PARAM = {
    "Condition": "patient",
    "MedicationStatement": "patient",
    "MedicationRequest": "patient",
    "MedicationAdministration": "patient",
    "MedicationDispense": "patient",
    "AllergyIntolerance": "patient",
    "Procedure": "patient",
    "ResearchSubject": "patient",
}
# Types that records of the planned types name by reference and that name no patient, so no
# search by patient finds them (service.mappers.SHARED_TYPES): Epic and Cerner send a
# medication order's drug as `medicationReference: Medication/123`. A population export asks
# for every one (`_type`); a per-patient fetch reads those its records name
# (service/fetching.py).
REFERENCED_TYPES = {
    "Medication": (
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
    )
}
CODES_PER_QUERY = 60  # about 2.5 KB of URL: well under common 8 KB limits, few requests


@dataclass(frozen=True)
class FetchPlan:
    """What to ask the FHIR server for: Observation codes (system|code) and other types."""

    observation_codes: tuple[str, ...]
    other_types: tuple[str, ...] = tuple(PATIENT_PARAM)
    # the value sets the trial reads: what a terminology server is asked about (runtime.py)
    valuesets: frozenset[str] = frozenset()

    @property
    def shared_types(self) -> tuple[str, ...]:
        """The REFERENCED_TYPES that records of `other_types` may name (Medication)."""
        planned = set(self.other_types)
        return tuple(t for t, by in REFERENCED_TYPES.items() if planned.intersection(by))

    def observation_queries(self) -> list[str]:
        codes = self.observation_codes
        return [
            ",".join(codes[i : i + CODES_PER_QUERY]) for i in range(0, len(codes), CODES_PER_QUERY)
        ]
