"""Observations stored under another name of LOINC (its OID, as CDA-derived records keep it),
fetched from the real FHIR server (sekmet-fhir 0.1.1).

The fetch plan asks for standard codes by code alone, which FHIR token search matches in any
system, so the server returns them; the mapper reads them under the canonical system. Asked
as `http://loinc.org|718-7`, the server returned nothing and I6.hgb could not be decided."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest

from service.criteria.engine import evaluate
from service.criteria.model import load_trial
from service.fetching import fetch_patient, plan_for
from service.fhir import FhirClient
from service.terminology import Terminology
from tests.conftest import TRIAL_PATH
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration
AS_OF = date(2026, 11, 20)
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
PATIENT = "oid-coded"


def records() -> list[dict[str, object]]:
    return [
        {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1990-02-02"},
        {
            "resourceType": "Observation",
            "id": f"{PATIENT}-hgb",
            "status": "final",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "code": {"coding": [{"system": LOINC_OID, "code": "718-7"}]},
            "effectiveDateTime": "2026-11-10",
            "valueQuantity": {"value": 5.4, "unit": "g/dL"},
        },
        {
            "resourceType": "Observation",
            "id": f"{PATIENT}-hcg",
            "status": "final",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "code": {"coding": [{"system": "LN", "code": "2106-3"}]},
            "effectiveDateTime": "2026-11-12",
            "valueString": "阳性",
        },
    ]


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    """A server of this module's own: the session's is counted patient by patient by the
    other tests, and a deletion would stay in its history."""
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


@pytest.fixture
async def stored(own_server: str) -> str:
    async with httpx.AsyncClient(base_url=own_server) as client:
        for resource in records():
            response = await client.put(
                f"/{resource['resourceType']}/{resource['id']}",
                json=resource,
                headers={"Content-Type": "application/fhir+json"},
            )
            assert response.status_code in (200, 201), response.text
    return own_server


async def test_results_stored_under_other_names_of_loinc_are_fetched_and_read(
    stored: str, terms: Terminology
) -> None:
    trial = load_trial(TRIAL_PATH)
    plan = plan_for(trial, terms)
    assert "718-7" in plan.observation_codes  # asked for in any system
    async with FhirClient(stored) as fhir:
        fetched = await fetch_patient(fhir, PATIENT, plan, terms)
    assert fetched.problems == []
    (hemoglobin,) = fetched.facts.labs_for("hemoglobin")
    assert hemoglobin.codes[0].system == "http://loinc.org"  # read under the canonical URI
    result = {c.id: c for c in evaluate(trial, fetched.facts, AS_OF, terms).criteria}
    assert result["I6.hgb"].verdict == "fail"  # 54 g/L < 60 g/L
    assert result["E13"].verdict == "fail"  # a positive urine pregnancy test
