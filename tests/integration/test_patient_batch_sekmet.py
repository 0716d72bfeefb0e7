"""fetch_patient in one batch against the real server (sekmet-fhir 0.1.1 declares `batch`):
the same facts for every demo patient as one search at a time, in one request each."""

from __future__ import annotations

import json

import httpx
import pytest

from service.criteria.model import load_trial
from service.fetching import fetch_patient, plan_for
from service.fhir import FhirClient
from service.terminology import Terminology
from tests.conftest import TRIAL_PATH
from tests.integration.conftest import DEMO

pytestmark = pytest.mark.integration


class OneByOne(FhirClient):
    """Today's path: the server's batch ignored."""

    async def supports_batch(self) -> bool:
        return False


class Counting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


def demo_patients() -> list[str]:
    return sorted(
        entry["resource"]["id"]
        for path in DEMO.glob("*.json")
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    )


async def test_one_batch_gives_the_same_facts_as_searches_one_by_one(
    fhir_server: str, terms: Terminology
) -> None:
    plan = plan_for(load_trial(TRIAL_PATH), terms)
    patients = demo_patients()
    transport = Counting()
    async with (
        # a scan cached for the whole test: 71 patients take over a minute on a busy machine
        FhirClient(fhir_server, transport=transport, scan_ttl_s=3600) as batched,
        OneByOne(fhir_server) as single,
    ):
        for patient_id in patients:
            by_batch = await fetch_patient(batched, patient_id, plan, terms)
            by_search = await fetch_patient(single, patient_id, plan, terms)
            assert by_batch.facts == by_search.facts, patient_id
            assert by_batch.resources == by_search.resources, patient_id
            assert by_batch.problems == by_search.problems == [], patient_id
    assert transport.requests.count("GET /fhir/metadata") == 1
    posts = [r for r in transport.requests if r.startswith("POST")]
    assert len(posts) == len(patients) + 1  # p71: the Medication its order names, read after
    # ResearchSubject?patient= is refused: scanned once (cached), not once per patient
    assert transport.requests.count("GET /fhir/ResearchSubject") == 1
