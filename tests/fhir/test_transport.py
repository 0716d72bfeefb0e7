"""The one retry helper (service/fhir/transport.py): what is retried, how long it waits."""

from __future__ import annotations

import httpx
import pytest
import respx

from service.errors import FhirFatalError, FhirTemporaryError
from service.fhir.transport import Retry, RetryPolicy, send

URL = "http://fhir.test/fhir/Patient/p1"


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def classify(response: httpx.Response) -> int | Retry:
    """503 is temporary (with its Retry-After), 400 fatal, anything else the status."""
    if response.status_code == 503:
        after = response.headers.get("Retry-After")
        error = FhirTemporaryError("503", url=URL, http_status=503)
        return Retry(error, float(after) if after else None)
    if response.status_code == 400:
        raise FhirFatalError("400", url=URL, http_status=400)
    return response.status_code


async def call(policy: RetryPolicy, sleeps: Sleeps) -> int:
    async with httpx.AsyncClient() as http:
        request = http.build_request("GET", URL)
        return await send(http, request, policy=policy, classify=classify, auth=None, sleep=sleeps)


def test_full_jitter_backoff_is_bounded_and_grows() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    for attempt in range(1, 8):
        delays = [policy.delay(attempt, None) for _ in range(50)]
        assert all(0 <= d <= min(5.0, 2.0**attempt) for d in delays)
    assert policy.delay(3, 7.5) == 7.5, "Retry-After wins over the backoff"


@respx.mock
async def test_temporary_answers_are_retried_until_one_succeeds() -> None:
    route = respx.get(URL).mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200)]
    )
    sleeps = Sleeps()
    assert await call(RetryPolicy(attempts=3), sleeps) == 200
    assert route.call_count == 2
    assert sleeps.calls == [2.0]


@respx.mock
async def test_the_attempts_are_bounded_and_the_last_error_raised() -> None:
    route = respx.get(URL).respond(503)
    sleeps = Sleeps()
    with pytest.raises(FhirTemporaryError, match="503"):
        await call(RetryPolicy(attempts=3, base_delay_s=0), sleeps)
    assert route.call_count == 3
    assert len(sleeps.calls) == 2


@respx.mock
async def test_a_fatal_answer_is_raised_at_once() -> None:
    route = respx.get(URL).respond(400)
    sleeps = Sleeps()
    with pytest.raises(FhirFatalError, match="400"):
        await call(RetryPolicy(attempts=3), sleeps)
    assert route.call_count == 1
    assert sleeps.calls == []


@respx.mock
async def test_a_retry_after_beyond_the_bound_is_not_waited_for() -> None:
    route = respx.get(URL).respond(503, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    with pytest.raises(FhirTemporaryError):
        await call(RetryPolicy(attempts=3, max_retry_after_s=30), sleeps)
    assert route.call_count == 1
    assert sleeps.calls == []


@respx.mock
async def test_network_errors_are_temporary() -> None:
    route = respx.get(URL).mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(204)])
    sleeps = Sleeps()
    assert await call(RetryPolicy(attempts=2, base_delay_s=0), sleeps) == 204
    assert route.call_count == 2
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(FhirTemporaryError, match="timed out"):
        await call(RetryPolicy(attempts=2, base_delay_s=0), sleeps)


@respx.mock
async def test_one_attempt_means_no_retry() -> None:
    route = respx.get(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(FhirTemporaryError, match="cannot reach"):
        await call(RetryPolicy(attempts=1), Sleeps())
    assert route.call_count == 1
