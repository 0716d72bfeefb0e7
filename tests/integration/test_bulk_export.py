"""Bulk Data export against the real FHIR server (sekmet-fhir 0.1.1).

The strongest check: the NDJSON an export (or the search fallback) writes screens to the same
status, patient by patient, as the demo Bundles it was loaded from.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import pytest

from service.fetching import plan_for
from service.fhir.auth import SmartBackendAuth
from service.fhir.bulk import (
    ExportProgress,
    ExportRequest,
    export,
    export_or_search,
    search_to_ndjson,
)
from service.fhir.client import FhirClient
from service.screening import screen
from tests.conftest import ROOT, TRIAL_PATH, load_nct, load_terms
from tests.integration.conftest import SmartServer
from tests.integration.test_fhir_server_smoke import demo_resources

pytestmark = pytest.mark.integration
AS_OF = date(2026, 11, 20)
TYPES = [
    "Patient",
    "Observation",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
    "AllergyIntolerance",
    "Procedure",
    "ResearchSubject",
    "Medication",  # p71's order names one by reference
]


def statuses(data: Path) -> dict[str, str]:
    run = screen(data, TRIAL_PATH, ROOT / "terminology", AS_OF)
    try:
        return {s.reference: s.status for s in run.summaries}
    finally:
        run.close()


@pytest.fixture(scope="module")
def bundle_statuses() -> dict[str, str]:
    """Screening the demo Bundle files: what every way through the server must give."""
    return statuses(ROOT / "demo")


class Recording(httpx.AsyncBaseTransport):
    """The real transport, keeping each request (method, URL, headers) for the test to read."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def expected_counts() -> dict[str, int]:
    return {kind: len(demo_resources(kind)) for kind in TYPES if demo_resources(kind)}


async def test_system_export_screens_like_the_demo_bundles(
    fhir_server: str, tmp_path: Path, bundle_statuses: dict[str, str]
) -> None:
    seen: list[ExportProgress] = []
    out = tmp_path / "bulk"
    async with FhirClient(fhir_server) as fhir:
        result = await export(
            fhir, out, ExportRequest.of(TYPES), progress=seen.append, poll_limit_s=120
        )
    assert result.counts()["Patient"] == len(demo_resources("Patient")) == 71
    assert result.counts() == expected_counts(), "every demo resource of these types, once"
    assert all(f.lines == f.expected for f in result.files), "line counts match the manifest"
    assert result.issues == ()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}-1.ndjson" for t in result.counts())
    assert "in-progress" in {p.stage for p in seen}, "the server's X-Progress was reported"
    assert statuses(out) == bundle_statuses


async def test_an_incremental_export_since_the_last_transaction_time_is_empty(
    fhir_server: str, tmp_path: Path
) -> None:
    """`_since` works against sekmet's string comparison: UTC, milliseconds, Z."""
    async with FhirClient(fhir_server) as fhir:
        first = await export(
            fhir, tmp_path / "first", ExportRequest.of(["Patient"]), poll_limit_s=60
        )
        again = await export(
            fhir,
            tmp_path / "again",
            ExportRequest.of(["Patient"], since=first.transaction_time),
            poll_limit_s=60,
        )
    assert first.counts() == {"Patient": 71}
    assert again.counts() == {}, "nothing changed since the first export"
    assert again.transaction_time >= first.transaction_time


async def test_a_patient_level_export_gets_research_subjects_by_search(
    fhir_server: str, tmp_path: Path, bundle_statuses: dict[str, str]
) -> None:
    """sekmet's Patient $export leaves ResearchSubject and Medication out (neither is in its
    Patient compartment); export_or_search reads them."""
    plan = plan_for(load_nct(), load_terms())
    out = tmp_path / "bulk"
    async with FhirClient(fhir_server) as fhir:
        result = await export_or_search(fhir, out, plan, level="patient", poll_limit_s=120)
    assert result.method == "bulk-export"
    # Types the demo has no record of have no file either, and are searched (finding none).
    empty = tuple(t for t in plan.other_types if not demo_resources(t))
    searched = tuple(t for t in plan.other_types if t in {*empty, "ResearchSubject"})
    assert result.searched == (*searched, "Medication")
    assert result.counts()["ResearchSubject"] == len(demo_resources("ResearchSubject"))
    assert result.counts()["Medication"] == len(demo_resources("Medication")) == 1
    assert statuses(out) == bundle_statuses


async def test_the_search_fallback_screens_like_the_demo_bundles(
    fhir_server: str, tmp_path: Path, bundle_statuses: dict[str, str]
) -> None:
    plan = plan_for(load_nct(), load_terms())
    out = tmp_path / "search"
    async with FhirClient(fhir_server) as fhir:
        result = await search_to_ndjson(fhir, out, plan)
    assert result.method == "search"
    assert result.counts()["Patient"] == 71
    assert statuses(out) == bundle_statuses


async def test_downloads_from_the_auth_server_carry_the_token(
    fhir_server_auth: SmartServer, tmp_path: Path
) -> None:
    server, transport = fhir_server_auth, Recording()
    auth = SmartBackendAuth.from_file(
        server.token_url,
        server.client_id,
        server.private_key_path,
        key_id=server.key_id,
        algorithm=server.algorithm,
        scope="system/*.rs",
    )
    async with FhirClient(server.base_url, auth=auth, transport=transport) as fhir:
        # kept on the server, so the test can show a download without the token is refused
        result = await export(
            fhir,
            tmp_path / "bulk",
            ExportRequest.of(["Patient", "Condition"]),
            poll_limit_s=60,
            delete_when_done=False,
        )
    assert result.counts() == {k: v for k, v in expected_counts().items() if k in result.counts()}
    assert result.counts()["Patient"] == 71
    downloads = [r for r in transport.requests if "/bulk-files/" in r.url.path]
    assert len(downloads) == len(result.files) == 2
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in downloads)
    refused = httpx.get(str(downloads[0].url))
    assert refused.status_code == 401, "the file server does need the token"
