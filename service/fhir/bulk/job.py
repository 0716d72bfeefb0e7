"""The export job: kick-off (through the retry helper), then polling until the manifest,
its own state machine (202 and 429 are waits, not failures; the IG asks clients to back off),
and the clean-up DELETE (Session.cancel)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson

from service.errors import (
    BulkExportFailed,
    BulkExportTimeout,
    BulkExportUnsupported,
    FhirAuthError,
    FhirMalformedResponse,
    FhirTemporaryError,
)
from service.fhir.bulk.manifest import Manifest, parse_manifest
from service.fhir.bulk.request import ExportRequest
from service.fhir.bulk.session import Session, suffix
from service.fhir.responses import (
    TRANSIENT_STATUSES,
    issues_of,
    operation_outcome,
    retry_after_s,
    status_error,
)
from service.fhir.transport import Retry

__all__ = ["kick_off", "poll"]

log = logging.getLogger("service.fhir.bulk")
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
# IssueType codes under `transient` (FHIR R4 CodeSystem issue-type): "try again later".
TRANSIENT_ISSUES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)


def _transient(outcome: dict[str, Any] | None) -> bool:
    """A 5xx without an OperationOutcome is infrastructure; with one, the codes say."""
    codes = {code for _, code, _ in issues_of(outcome)}
    return not codes or codes <= TRANSIENT_ISSUES


async def kick_off(s: Session, request: ExportRequest) -> str:
    """Start the export; the absolute status URL (Content-Location)."""
    url = urljoin(s.client.base_url, request.level.path())
    # IG v2: respond-async is how a kick-off asks for the async pattern. handling=strict (as
    # the client sends on searches) makes a server refuse a parameter it would ignore.
    prefer = "respond-async, handling=strict" if s.client.strict else "respond-async"
    headers = {"Prefer": prefer}
    if request.method == "POST":
        http_request = s.client.build(
            "POST", url, content=orjson.dumps(request.parameters()), headers=headers
        )
    else:
        http_request = s.client.build("GET", url, params=tuple(request.query()), headers=headers)

    async def classify(response: httpx.Response) -> str | Retry:
        await response.aread()
        status = response.status_code
        if status == 202:
            location = response.headers.get("Content-Location")
            if not location:
                raise FhirMalformedResponse(
                    f"$export kick-off at {url}: 202 without Content-Location",
                    url=url,
                    http_status=status,
                )
            return s.trusted(urljoin(url, location), "export status URL", url)
        outcome = operation_outcome(response)
        detail = suffix(outcome)
        if status in TRANSIENT_STATUSES:
            retry_after = retry_after_s(response.headers.get("Retry-After"))
            problem = f"$export kick-off at {url} answered {status}{detail}"
            return Retry(FhirTemporaryError(problem, url=url, http_status=status), retry_after)
        if status in UNSUPPORTED_STATUSES:
            raise BulkExportUnsupported(
                f"no $export at {url} ({status}){detail}",
                url=url,
                http_status=status,
                outcome=outcome,
            )
        if status in (401, 403):
            raise status_error(status, outcome, url)
        if status < 300:
            raise FhirMalformedResponse(
                f"$export kick-off at {url} answered {status}, expected 202",
                url=url,
                http_status=status,
            )
        raise BulkExportFailed(
            f"$export kick-off refused ({status}) at {url}{detail}",
            url=url,
            http_status=status,
            outcome=outcome,
        )

    # A kick-off lost on the way back may have started a job we never hear of; the server
    # expires it. Retrying beats failing a sweep for a dropped connection.
    return await s.send(http_request, classify, what=f"$export kick-off at {url}")


@dataclass
class _Polling:
    """What polling one job remembers from one answer to the next."""

    job: str
    waits: int = 0  # answers "not yet" (202, 429): drives the backoff
    failures: int = 0  # transient failures in a row
    progress: str = ""  # the last X-Progress


async def poll(s: Session, job: str, limit_s: float) -> Manifest:
    """Poll the job until it completes; the parsed manifest. Each answer is one `_step`;
    the limit cuts the last wait short rather than oversleeping it."""
    started = s.clock()
    state = _Polling(job)
    while True:
        if s.clock() - started >= limit_s:
            raise BulkExportTimeout(
                f"export job {job} not complete after {limit_s:g}s "
                f"(last progress: {state.progress or 'none'}); cancelled",
                url=job,
            )
        try:
            # IG v2: status requests SHOULD accept application/json (the manifest is not FHIR).
            request = s.client.build("GET", job, accept="application/json")
            response = await s.client.send_once(request, auth=s.auth())
        except httpx.TransportError as exc:
            delay = _unreachable(s, state, exc)
        else:
            answer = _step(s, state, response)
            if isinstance(answer, Manifest):
                return answer
            delay = answer
        remaining = limit_s - (s.clock() - started)
        await s.sleep(max(0.0, min(delay, remaining)))


def _unreachable(s: Session, state: _Polling, exc: httpx.TransportError) -> float:
    """A network failure: how long to wait, or FhirTemporaryError after too many in a row."""
    state.failures += 1
    if state.failures > s.policy.transient_retries:
        raise FhirTemporaryError(
            f"export job {state.job} unreachable: {exc!r}", url=state.job
        ) from exc
    log.warning("polling export job %s failed (%r); retrying", state.job, exc)
    return s.policy.delay(None, state.failures)


def _step(s: Session, state: _Polling, response: httpx.Response) -> Manifest | float:
    """One answer to a status request: the manifest when done, else how long to wait."""
    status = response.status_code
    retry_after = retry_after_s(response.headers.get("Retry-After"))
    if status == 200:
        return parse_manifest(response.content, response.headers.get("Expires"), state.job)
    if status == 202:
        state.failures = 0
        state.waits += 1
        # IG: X-Progress is free text under 100 characters
        state.progress = response.headers.get("X-Progress", "")[:100]
        s.report("in-progress", state.progress or "in progress")
        return s.policy.delay(retry_after, state.waits)
    if status == 429:
        state.waits += 1
        log.warning("export job %s: 429 on polling; backing off, the job is kept", state.job)
        s.report("throttled", "429 Too Many Requests: polling less often")
        return s.policy.delay(retry_after, state.waits)
    return _failed(s, state, response, retry_after)


def _failed(
    s: Session, state: _Polling, response: httpx.Response, retry_after: float | None
) -> float:
    """Any other status: a typed error, or (a transient 5xx, not too many in a row) how long
    to wait before polling again."""
    job, status = state.job, response.status_code
    outcome = operation_outcome(response)
    detail = suffix(outcome)
    if status in (401, 403):
        raise FhirAuthError(
            f"FHIR server refused access ({status}) to export job {job}{detail}",
            url=job,
            http_status=status,
            outcome=outcome,
        )
    if status in (404, 410):
        raise BulkExportFailed(
            f"export job {job} is gone ({status}): cancelled or expired{detail}",
            url=job,
            http_status=status,
            outcome=outcome,
        )
    transient = status >= 500 and _transient(outcome)
    if not transient or state.failures >= s.policy.transient_retries:
        raise BulkExportFailed(
            f"export job {job} failed ({status}){detail}",
            url=job,
            http_status=status,
            outcome=outcome,
        )
    state.failures += 1
    log.warning("export job %s: %d on polling%s; retrying", job, status, detail)
    s.report("retry", f"{status} on polling")
    return s.policy.delay(retry_after, state.failures)
