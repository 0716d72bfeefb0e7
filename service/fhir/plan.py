"""What to ask a FHIR server for about one patient, or a population: a `FetchPlan`.

Pure data in FHIR terms (Observation codes, resource types, the search parameter naming the
patient); which plan a trial needs is decided above the client (service/fetching.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES_PER_QUERY", "PATIENT_PARAM", "FetchPlan"]

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
CODES_PER_QUERY = 60  # about 2.5 KB of URL: well under common 8 KB limits, few requests


@dataclass(frozen=True)
class FetchPlan:
    """What to ask the FHIR server for: Observation codes (system|code) and other types."""

    observation_codes: tuple[str, ...]
    other_types: tuple[str, ...] = tuple(PATIENT_PARAM)
    # the value sets the trial reads: what a terminology server is asked about (runtime.py)
    valuesets: frozenset[str] = frozenset()

    def observation_queries(self) -> list[str]:
        codes = self.observation_codes
        return [
            ",".join(codes[i : i + CODES_PER_QUERY]) for i in range(0, len(codes), CODES_PER_QUERY)
        ]
