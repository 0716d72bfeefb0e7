"""fetch_patient reads the Medications a patient's orders name by reference (as Epic and
Cerner send them), after the searches: in a batch where the server takes one, else one
read each. One that cannot be read leaves its order an unknown drug, whose criteria are
`unknown`, never pass or fail. The server is tests/fhir/test_patient_batch.py's fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from service.criteria.engine import evaluate_criterion
from service.facts import MedicationExposure
from service.fetching import fetch_patient
from service.fhir.plan import FetchPlan
from service.terminology import Terminology
from tests import factories as f
from tests.conftest import context, load_nct
from tests.fhir.test_patient_batch import BASE, FakeServer, Sleeps, client

PLAN = FetchPlan(observation_codes=("http://loinc.org|751-8",), other_types=("MedicationRequest",))
Resource = dict[str, Any]


def order(ident: str, reference: str) -> Resource:
    """An active G-CSF-era order 7 days ago naming its drug only by reference."""
    record = f.medication(f.FILGRASTIM, start=f.ago(7), kind="MedicationRequest", status="active")
    return f.by_reference(record | {"id": ident}, reference)


RECORDS = [
    f.patient(),
    f.obs(f.ANC, 2.0, "10*9/L", days=2),
    f.medication_resource("med1", f.FILGRASTIM),
    order("mr-held", "Medication/med1"),
    order("mr-gone", "Medication/gone"),
    order("mr-elsewhere", "https://other.example.org/fhir/Medication/x9"),
]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeServer(list(RECORDS), router)
        router.get(host="fhir.test").mock(side_effect=fake.get)
        router.post(BASE).mock(side_effect=fake.post)
        yield fake


def by_order(medications: list[MedicationExposure]) -> dict[str, MedicationExposure]:
    return {m.reference.removeprefix("MedicationRequest/"): m for m in medications}


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one-by-one"])
async def test_referenced_medications_are_read_after_the_searches(
    server: FakeServer, terms: Terminology, batch: bool
) -> None:
    server.batch = batch
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    found = by_order(fetched.facts.medications)
    assert "gcsf" in found["mr-held"].concepts
    assert found["mr-held"].unresolved is None
    assert found["mr-gone"].unresolved == "Medication/gone (not found on the FHIR server)"
    assert found["mr-elsewhere"].unresolved == "Medication/x9 (on another server: not read)"
    assert fetched.problems == []
    asked = [u for urls in server.batches for u in urls] + server.gets()
    assert sorted(u for u in asked if "Medication/" in u) == [
        u if batch else f"/fhir/{u}" for u in ("Medication/gone", "Medication/med1")
    ]
    if batch:
        assert server.batches[1] == ["Medication/gone", "Medication/med1"]  # one more batch


async def test_a_failed_read_leaves_an_unknown_drug_and_the_count_unknown(
    server: FakeServer, terms: Terminology
) -> None:
    server.batch = False
    server.resources = [r for r in RECORDS if r.get("id") not in ("mr-gone", "mr-elsewhere")]
    server.pages["/fhir/Medication/med1"] = httpx.Response(503)
    async with client(Sleeps()) as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    (med,) = fetched.facts.medications
    assert med.concepts == frozenset()
    assert med.unresolved is not None
    assert med.unresolved.startswith("Medication/med1 (could not be fetched: ")
    anc = evaluate_criterion(load_nct().criterion("I6.anc"), fetched.facts, context())
    assert anc.verdict == "unknown"
    assert "an unknown drug, possibly Colony-stimulating factors" in anc.reason


async def test_no_read_when_no_record_names_a_medication_apart(
    server: FakeServer, terms: Terminology
) -> None:
    coded = f.medication(f.FILGRASTIM, start=f.ago(7), kind="MedicationRequest", status="active")
    server.resources = [*RECORDS[:2], coded]
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    assert "gcsf" in fetched.facts.medications[0].concepts
    assert len(server.batches) == 1  # the searches; no Medication read
