"""FHIR client faults, injected with respx: what a real server can't be made to do on demand."""

from __future__ import annotations

import httpx
import pytest
import respx

from service.errors import (
    FhirAuthError,
    FhirFatalError,
    FhirMalformedResponse,
    FhirNotFound,
    FhirTemporaryError,
    FhirUnsafeLink,
)
from service.fhir.client import FhirClient, RetryPolicy

BASE = "http://fhir.test/fhir"


def searchset(resources: list[dict], next_url: str | None = None) -> dict:  # type: ignore[type-arg]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def patient(i: int) -> dict:  # type: ignore[type-arg]
    return {"resourceType": "Patient", "id": f"p{i}"}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(sleep: Sleeps | None = None, **kwargs) -> FhirClient:  # type: ignore[no-untyped-def]
    return FhirClient(
        BASE, sleep=sleep or Sleeps(), retry=RetryPolicy(attempts=3, base_delay_s=0.01), **kwargs
    )


@respx.mock
async def test_search_follows_next_links_to_the_end() -> None:
    respx.get(f"{BASE}/Patient", params={"_count": "2"}).respond(
        json=searchset([patient(1), patient(2)], f"{BASE}/Patient?page=2")
    )
    respx.get(f"{BASE}/Patient", params={"page": "2"}).respond(
        json=searchset([patient(3)], "Patient?page=3")
    )
    respx.get(f"{BASE}/Patient", params={"page": "3"}).respond(json=searchset([]))
    async with client(page_size=2) as fhir:
        found = await fhir.search_all("Patient", {})
    assert [p["id"] for p in found] == ["p1", "p2", "p3"]


@respx.mock
async def test_strict_handling_is_requested() -> None:
    route = respx.get(f"{BASE}/Patient").respond(json=searchset([]))
    async with client() as fhir:
        await fhir.search_all("Patient", {"gender": "female"})
    assert route.calls.last.request.headers["Prefer"] == "handling=strict"
    assert route.calls.last.request.headers["Accept"] == "application/fhir+json"


@respx.mock
async def test_included_resources_are_not_matches() -> None:
    bundle = searchset([patient(1)])
    bundle["entry"].append(
        {"resource": {"resourceType": "Organization", "id": "o1"}, "search": {"mode": "include"}}
    )
    respx.get(f"{BASE}/Patient").respond(json=bundle)
    async with client() as fhir:
        assert [p["id"] for p in await fhir.search_all("Patient", {})] == ["p1"]


@respx.mock
async def test_429_with_retry_after_is_honoured_then_succeeds() -> None:
    sleeps = Sleeps()
    respx.get(f"{BASE}/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json=patient(1)),
        ]
    )
    async with client(sleeps) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"
    assert sleeps.calls == [3.0]


@respx.mock
async def test_503_retries_are_bounded_and_end_in_a_temporary_error() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Patient/p1").respond(503)
    async with client(sleeps) as fhir:
        with pytest.raises(FhirTemporaryError, match="503"):
            await fhir.read("Patient", "p1")
    assert route.call_count == 3
    assert len(sleeps.calls) == 2
    assert all(0 <= s <= 8 for s in sleeps.calls)


@respx.mock
async def test_a_retry_after_beyond_the_limit_fails_at_once() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Patient/p1").respond(429, headers={"Retry-After": "3600"})
    async with client(sleeps) as fhir:
        with pytest.raises(FhirTemporaryError):
            await fhir.read("Patient", "p1")
    assert route.call_count == 1
    assert sleeps.calls == []


@respx.mock
async def test_timeouts_are_retried_then_reported() -> None:
    route = respx.get(f"{BASE}/Patient/p1").mock(side_effect=httpx.ReadTimeout("slow"))
    async with client() as fhir:
        with pytest.raises(FhirTemporaryError, match="timed out"):
            await fhir.read("Patient", "p1")
    assert route.call_count == 3


@respx.mock
async def test_operation_outcome_becomes_a_typed_error_with_its_text() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "not-supported", "diagnostics": "unknown parameter foo"}
        ],
    }
    respx.get(f"{BASE}/Patient").respond(400, json=outcome)
    async with client() as fhir:
        with pytest.raises(FhirFatalError) as caught:
            await fhir.search_all("Patient", {"foo": "1"})
    assert "unknown parameter foo" in str(caught.value)
    assert caught.value.outcome == outcome
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, FhirAuthError), (403, FhirAuthError), (404, FhirNotFound), (410, FhirNotFound)],
)
@respx.mock
async def test_statuses_map_to_domain_errors(status: int, error: type[Exception]) -> None:
    respx.get(f"{BASE}/Patient/p1").respond(status)
    async with client() as fhir:
        with pytest.raises(error):
            await fhir.read("Patient", "p1")


@respx.mock
async def test_truncated_page_is_a_malformed_response_naming_the_url() -> None:
    respx.get(f"{BASE}/Patient").respond(
        200, content=b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
    )
    async with client() as fhir:
        with pytest.raises(
            FhirMalformedResponse, match=r"not JSON from http://fhir\.test/fhir/Patient"
        ):
            await fhir.search_all("Patient", {})


@respx.mock
async def test_non_fhir_body_is_malformed() -> None:
    respx.get(f"{BASE}/Patient/p1").respond(200, json={"hello": "world"})
    async with client() as fhir:
        with pytest.raises(FhirMalformedResponse, match="not a FHIR resource"):
            await fhir.read("Patient", "p1")


@respx.mock
async def test_next_link_loop_is_refused() -> None:
    respx.get(f"{BASE}/Patient", params={"_count": "200"}).respond(
        json=searchset([patient(1)], f"{BASE}/Patient?page=2")
    )
    respx.get(f"{BASE}/Patient", params={"page": "2"}).respond(
        json=searchset([patient(2)], f"{BASE}/Patient?page=2")
    )
    async with client() as fhir:
        with pytest.raises(FhirUnsafeLink, match="loops"):
            await fhir.search_all("Patient", {})


@respx.mock
async def test_next_link_to_another_host_is_refused() -> None:
    respx.get(f"{BASE}/Patient").respond(
        json=searchset([patient(1)], "http://elsewhere.example/fhir/Patient?page=2")
    )
    async with client() as fhir:
        with pytest.raises(FhirUnsafeLink, match="another host"):
            await fhir.search_all("Patient", {})


@respx.mock
async def test_a_refused_patient_search_falls_back_to_one_cached_scan() -> None:
    refused = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "patient"}],
    }
    by_patient = respx.get(f"{BASE}/ResearchSubject", params={"patient": "Patient/p1"}).respond(
        400, json=refused
    )
    subjects = [
        {"resourceType": "ResearchSubject", "id": "r1", "individual": {"reference": "Patient/p1"}},
        {"resourceType": "ResearchSubject", "id": "r2", "individual": {"reference": "Patient/p2"}},
    ]
    scan = respx.get(f"{BASE}/ResearchSubject", params={"_count": "200"}).respond(
        json=searchset(subjects)
    )
    async with client() as fhir:
        first = await fhir.search_for_patient("ResearchSubject", "patient", "Patient/p1")
        second = await fhir.search_for_patient("ResearchSubject", "patient", "Patient/p2")
    assert [r["id"] for r in first] == ["r1"]
    assert [r["id"] for r in second] == ["r2"]
    assert by_patient.call_count == 1  # remembered as unsupported
    assert scan.call_count == 1  # the scan is cached


@respx.mock
async def test_other_search_errors_are_not_mistaken_for_an_unsupported_parameter() -> None:
    respx.get(f"{BASE}/Condition").respond(500)
    async with client() as fhir:
        with pytest.raises(FhirFatalError):
            await fhir.search_for_patient("Condition", "patient", "Patient/p1")


@respx.mock
async def test_an_unreadable_retry_after_falls_back_to_backoff() -> None:
    sleeps = Sleeps()
    respx.get(f"{BASE}/Patient/p1").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "soon, probably"}),
            httpx.Response(200, json=patient(1)),
        ]
    )
    async with client(sleeps) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"
    assert len(sleeps.calls) == 1
    assert 0 <= sleeps.calls[0] <= 8


@respx.mock
async def test_retry_after_as_an_http_date() -> None:
    sleeps = Sleeps()
    respx.get(f"{BASE}/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            httpx.Response(200, json=patient(1)),
        ]
    )
    async with client(sleeps) as fhir:
        await fhir.read("Patient", "p1")
    assert sleeps.calls == [0.0]  # a date in the past: retry at once


@respx.mock
async def test_a_retry_warning_names_the_search_without_its_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codes = ",".join(f"http://loinc.org|{n}-1" for n in range(1000, 1060))
    respx.get(f"{BASE}/Observation").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=searchset([]))]
    )
    async with client() as fhir:
        with caplog.at_level("WARNING", logger="service.fhir.client"):
            found = [r async for r in fhir.search("Observation", {"code": codes})]
    assert found == []
    (warning,) = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert "/Observation?..." in warning
    assert "loinc" not in warning
    assert len(warning) < 300


# ---------------------------------------------------------------- transaction (a write)
@respx.mock
async def test_a_transaction_is_posted_once_and_never_retried() -> None:
    route = respx.post(BASE).respond(503, text="busy")
    sleeps = Sleeps()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    async with client(sleeps) as fhir:
        with pytest.raises(FhirTemporaryError) as caught:
            await fhir.transaction(bundle)
    assert route.call_count == 1
    assert sleeps.calls == []
    assert caught.value.detail == "busy"
    route.mock(side_effect=httpx.ConnectError("reset"))
    async with client(sleeps) as fhir:
        with pytest.raises(FhirTemporaryError):
            await fhir.transaction(bundle)
    assert route.call_count == 2, "a lost connection is not retried either"


@respx.mock
async def test_a_transaction_answer_is_returned_and_auth_carried() -> None:
    from service.fhir.auth import StaticBearer

    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    route = respx.post(BASE).respond(200, json=answer)
    async with client(auth=StaticBearer("tok")) as fhir:
        assert await fhir.transaction({"resourceType": "Bundle", "type": "transaction"}) == answer
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Content-Type"] == "application/fhir+json"


@respx.mock
async def test_a_next_link_elsewhere_is_refused_before_the_token_goes_there() -> None:
    from service.fhir.auth import StaticBearer

    respx.get(f"{BASE}/Patient").respond(
        json=searchset([patient(1)], "http://elsewhere.test/fhir/Patient?page=2")
    )
    async with client(auth=StaticBearer("tok")) as fhir:
        with pytest.raises(FhirUnsafeLink):
            await fhir.search_all("Patient", {})
