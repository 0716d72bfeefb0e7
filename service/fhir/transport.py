"""One way to send a request to a FHIR server and ask again: `send`.

Every HTTP call cohort-match makes to a FHIR server goes through `send`: the client's reads,
searches and batches, a Bulk export's kick-off and its file downloads. The per-call
difference is the `classify` function passed in: it turns an answer into the value wanted,
raises the error that is not worth retrying, or returns `Retry(error, retry_after)`.
Polling a Bulk job is not a retry and keeps its own state machine (service/fhir/bulk/job.py);
a write (`FhirClient.transaction`) is sent once and never retried.

The retry policy (`RetryPolicy`), the one for every FHIR call:

- temporary: a network error (connection refused or reset, timeout, a body cut short) or
  an answer `classify` calls temporary (429, 502, 503, 504 for a read); anything else
  fails at once;
- at most `attempts` tries in all, the first included;
- before try n+1, wait `Retry-After` when the server sent one (seconds or an HTTP date),
  else "full jitter" exponential backoff: uniform(0, min(max_delay_s, base_delay_s * 2**n))
  (AWS Architecture Blog, "Exponential Backoff And Jitter"), which spreads the retries of many
  clients apart;
- a `Retry-After` longer than `max_retry_after_s` is not waited for: the call fails at once
  with the server's answer (a sweep or a request should not hang on a throttled server).

Callers choose the numbers, not the rules: the FhirClient takes a policy (`retry=`), a Bulk
export's transfers use `BulkPolicy.retry`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from service.errors import FhirError, FhirTemporaryError
from service.fhir.responses import without_query

__all__ = ["Retry", "RetryPolicy", "network_error", "send"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking a FHIR server again (module docstring)."""

    attempts: int = 4  # total tries, the first included
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After is not waited for: it fails

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before try `attempt + 1` (`attempt` >= 1 tries have failed)."""
        if retry_after is not None:
            return retry_after
        # "full jitter" (AWS architecture blog): spreads retries of many clients apart
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))  # noqa: S311


@dataclass(frozen=True)
class Retry:
    """What `classify` returns for an answer worth asking again; `error` is raised when the
    tries run out."""

    error: FhirError
    retry_after: float | None = None


def network_error(exc: httpx.TransportError, request: httpx.Request) -> FhirError:
    """The temporary error a network failure stands for."""
    url = str(request.url)
    if isinstance(exc, httpx.TimeoutException):
        return FhirTemporaryError(f"timed out: {url}", url=url)
    return FhirTemporaryError(f"cannot reach the FHIR server: {exc!r}", url=url)


async def send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    policy: RetryPolicy,
    classify: Callable[[httpx.Response], Awaitable[T | Retry]],
    auth: httpx.Auth | None,
    stream: bool = False,
    sleep: Sleep = asyncio.sleep,
    on_network_error: Callable[[httpx.TransportError, httpx.Request], FhirError] = network_error,
    on_retry: Callable[[FhirError], None] | None = None,
) -> T:
    """Send `request` with `http` and classify the answer, retrying temporary failures as
    `policy` says.

    `classify` turns the answer into the value wanted, raises for one not worth retrying, or
    returns `Retry`; it may read a streamed body (`stream=True`), and a network error while
    it does counts as temporary. The response is closed once `classify` returned. `auth`
    (None: none) signs each try afresh, so a token refreshed meanwhile is used.
    """
    attempt = 0
    while True:
        cause: BaseException
        try:
            response = await http.send(request, auth=auth, stream=stream)
            try:
                outcome = await classify(response)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:  # includes a stream cut short inside classify
            outcome = Retry(on_network_error(exc, request))
            cause = exc
        else:
            if not isinstance(outcome, Retry):
                return outcome
            cause = outcome.error
        error, retry_after = outcome.error, outcome.retry_after
        if retry_after is not None and retry_after > policy.max_retry_after_s:
            raise error
        attempt += 1
        if attempt >= policy.attempts:
            raise error from (None if cause is error else cause)
        delay = policy.delay(attempt, retry_after)
        log.warning(
            "FHIR %s retry %d/%d in %.2fs: %s",
            request.method,
            attempt,
            policy.attempts - 1,
            delay,
            without_query(error.message, error.url),
        )
        if on_retry is not None:
            on_retry(error)
        await sleep(delay)
