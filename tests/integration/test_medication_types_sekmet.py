"""MedicationAdministration and MedicationDispense through the real FHIR server
(sekmet-fhir 0.1.1): searched per patient (in one batch and one by one) and exported.

The demo population has none of either type, so this module loads its own patient into a
server of its own (the shared demo server's counts stay as the demo has them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.facts import MedicationExposure
from service.fetching import fetch_patient, plan_for
from service.fhir import FhirClient
from service.fhir.bulk import export_or_search
from tests.conftest import ROOT, load_nct, load_terms
from tests.integration.conftest import fhir_server_script, free_port
from tests.integration.test_patient_batch_sekmet import OneByOne

pytestmark = pytest.mark.integration

REALWORLD = ROOT / "tests" / "data" / "realworld"
PATIENT_ID = "meds1"


def realworld(name: str) -> list[dict[str, Any]]:
    bundle = json.loads((REALWORLD / f"{name}.json").read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


def transaction() -> dict[str, Any]:
    """One patient with two rituximab administrations and a G-CSF dispense."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1990-05-01", "gender": "female"}
    ]
    for resource in [
        *realworld("rituximab-two-infusions-14-days-apart"),
        *realworld("gcsf-dispense-five-days"),
    ]:
        resource = dict(resource, subject={"reference": f"Patient/{PATIENT_ID}"})
        resource.pop("authorizingPrescription", None)  # an order this bundle does not hold
        resources.append(resource)
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


@pytest.fixture(scope="module")
def meds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("meds-bundle")
    (data / "meds1.json").write_text(json.dumps(transaction()), encoding="utf-8")
    fhir_server_script("install", timeout=900)
    port = free_port()
    fhir_server_script("start", "--port", str(port))
    try:
        fhir_server_script("load", str(data), "--port", str(port))
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        fhir_server_script("stop", "--port", str(port))


def by_type(medications: list[MedicationExposure]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for med in medications:
        found.setdefault(med.resource_type, set()).add(med.reference)
    return found


async def test_fetched_in_one_batch_and_one_by_one(meds_server: str) -> None:
    terms = load_terms()
    plan = plan_for(load_nct(), terms)
    async with FhirClient(meds_server) as batched, OneByOne(meds_server) as single:
        by_batch = await fetch_patient(batched, PATIENT_ID, plan, terms)
        by_search = await fetch_patient(single, PATIENT_ID, plan, terms)
    assert by_batch.facts == by_search.facts
    assert by_batch.problems == by_search.problems == []
    assert by_type(by_batch.facts.medications) == {
        "MedicationAdministration": {
            "MedicationAdministration/rtx-1",
            "MedicationAdministration/rtx-2",
        },
        "MedicationDispense": {"MedicationDispense/gcsf-disp-1"},
    }
    (dispense,) = by_batch.facts.medications_for("gcsf")
    assert dispense.end_basis == "daysSupply 5 days"


async def test_exported_at_patient_level(meds_server: str, tmp_path: Path) -> None:
    plan = plan_for(load_nct(), load_terms())
    async with FhirClient(meds_server) as fhir:
        result = await export_or_search(fhir, tmp_path, plan, level="patient", poll_limit_s=120)
    counts = result.counts()
    assert counts["MedicationAdministration"] == 2
    assert counts["MedicationDispense"] == 1
    # Both are in the Patient compartment: exported, not searched afterwards.
    assert "MedicationAdministration" not in result.searched
    assert "MedicationDispense" not in result.searched
