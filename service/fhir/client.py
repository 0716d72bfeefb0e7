"""Async FHIR R4 search client: paging, retries, typed errors.

One `httpx.AsyncClient` (connection pool) per process, shared by every request. Searches
follow `Bundle.link[next]` to the end, refusing a next link to another host or one already
visited. Temporary failures (timeouts, connection errors, 429/502/503/504) are retried with
exponential backoff and full jitter, honouring `Retry-After`, a bounded number of times;
everything else fails at once with an error that names the URL and carries the server's
OperationOutcome when it sent one.

Vendor notes: some servers return absolute next links on an internal host name behind a
proxy; set `allow_hosts` to accept those explicitly rather than disabling the check.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from service.errors import (
    FhirAuthError,
    FhirError,
    FhirFatalError,
    FhirMalformedResponse,
    FhirNotFound,
    FhirTemporaryError,
    FhirUnsafeLink,
)
from service.fhir.auth import Auth, NoAuth
from service.fhir.responses import operation_outcome, outcome_text, retry_after_s

__all__ = ["FhirClient", "RetryPolicy"]

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # total tries, the first included
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After is not waited for: it fails

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        # "full jitter" (AWS architecture blog): spreads retries of many clients apart
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))  # noqa: S311


def _refused_parameter(outcome: dict[str, Any] | None) -> bool:
    codes = {issue.get("code") for issue in (outcome or {}).get("issue") or ()}
    return bool(codes & {"not-supported", "invalid", "processing"})


def _refers_to(resource: dict[str, Any], reference: str) -> bool:
    for field in ("subject", "patient", "individual"):
        value = resource.get(field)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            text = value["reference"].split("/_history/")[0]
            if text == reference or text.endswith(f"/{reference}"):
                return True
    return False


class FhirClient:
    """FHIR R4 REST client for search and read. Use as `async with FhirClient(...) as fhir`."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout_s: float = 20.0,
        retry: RetryPolicy | None = None,
        page_size: int = 200,
        max_pages: int = 1000,
        allow_hosts: frozenset[str] = frozenset(),
        strict: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 50,
        scan_ttl_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.auth = auth or NoAuth()
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self.max_pages = max_pages
        self.strict = strict
        self._hosts = {urlsplit(self.base_url).netloc, *allow_hosts}
        self._sleep = sleep
        self.scan_ttl_s = scan_ttl_s
        self._unsupported: set[tuple[str, str]] = set()
        self._scans: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._scan_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ requests
    async def get_json(
        self, url: str, *, token: str | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """GET a FHIR JSON resource, retrying temporary failures. `token` overrides auth."""
        headers = {"Accept": FHIR_JSON}
        if self.strict:
            # Fail loudly when the server ignores a search parameter (FHIR R4 3.1.1.5.3),
            # instead of silently returning more (or other) resources than asked for.
            headers["Prefer"] = "handling=strict"
        attempt = 0
        while True:
            authorization = f"Bearer {token}" if token else await self.auth.header(self._http)
            if authorization:
                headers["Authorization"] = authorization
            try:
                response = await self._http.get(url, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                error: FhirError = FhirTemporaryError(f"timed out: {url}", url=url)
                cause: Exception = exc
                retry_after = None
            except httpx.TransportError as exc:
                error = FhirTemporaryError(f"cannot reach the FHIR server: {exc}", url=url)
                cause = exc
                retry_after = None
            else:
                if response.status_code in RETRY_STATUSES:
                    retry_after = retry_after_s(response.headers.get("Retry-After"))
                    error = FhirTemporaryError(
                        f"FHIR server answered {response.status_code} for {url}",
                        url=url,
                        http_status=response.status_code,
                        outcome=operation_outcome(response),
                    )
                    cause = error
                    if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                        raise error
                else:
                    return self._parse(response, url)
            attempt += 1
            if attempt >= self.retry.attempts:
                raise error from cause
            delay = self.retry.delay(attempt, retry_after)
            log.warning(
                "FHIR GET retry %d/%d in %.2fs: %s",
                attempt,
                self.retry.attempts - 1,
                delay,
                error.message,
            )
            await self._sleep(delay)

    def _parse(self, response: httpx.Response, url: str) -> dict[str, Any]:
        status = response.status_code
        outcome = operation_outcome(response)
        detail = outcome_text(outcome)
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            raise FhirAuthError(
                f"FHIR server refused access ({status}) to {url}{suffix}",
                url=url,
                http_status=status,
                outcome=outcome,
            )
        if status in (404, 410):
            raise FhirNotFound(
                f"not found ({status}): {url}{suffix}", url=url, http_status=status, outcome=outcome
            )
        if status >= 400:
            raise FhirFatalError(
                f"FHIR server answered {status} for {url}{suffix}",
                url=url,
                http_status=status,
                outcome=outcome,
            )
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise FhirMalformedResponse(
                f"not JSON from {url} ({str(exc)[:80]})", url=url, http_status=status
            ) from exc
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirMalformedResponse(
                f"not a FHIR resource from {url}", url=url, http_status=status
            )
        return body

    # ------------------------------------------------------------------ search
    async def search(
        self, resource_type: str, params: dict[str, str], *, token: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every resource of `resource_type` matching `params`, across all pages.

        Included resources (search mode `include`) and OperationOutcomes are skipped.
        """
        async for url, entry in self._entries(resource_type, params, "searchset", token):
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                raise FhirMalformedResponse(f"entry without resource at {url}", url=url)
            mode = (entry.get("search") or {}).get("mode", "match")
            if mode == "match" and resource.get("resourceType") == resource_type:
                yield resource

    async def history(
        self, resource_type: str, params: dict[str, str], *, token: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The entries of `[type]/_history` (newest first, as the spec sorts them), across
        all pages. A deletion is an entry with `request.method` DELETE and no resource."""
        async for _, entry in self._entries(f"{resource_type}/_history", params, "history", token):
            yield entry

    async def _entries(
        self, path: str, params: dict[str, str], bundle_type: str, token: str | None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(page URL, entry) for every entry of a paged Bundle of `bundle_type`."""
        query = {"_count": str(self.page_size), **params}
        # Built once: httpx validates a long code=... query character by character.
        first = str(httpx.URL(urljoin(self.base_url, path), params=query))
        url: str | None = first
        seen: set[str] = {first}
        pages = 0
        while url is not None:
            pages += 1
            if pages > self.max_pages:
                raise FhirUnsafeLink(f"more than {self.max_pages} pages for {path}", url=url)
            bundle = await self.get_json(url, token=token)
            if bundle.get("resourceType") != "Bundle" or bundle.get("type") != bundle_type:
                raise FhirMalformedResponse(f"expected a {bundle_type} Bundle from {url}", url=url)
            entries = bundle.get("entry")
            if entries is not None and not isinstance(entries, list):
                raise FhirMalformedResponse(f"Bundle.entry is not a list at {url}", url=url)
            for entry in entries or ():
                if not isinstance(entry, dict):
                    raise FhirMalformedResponse(
                        f"Bundle.entry item is not an object at {url}", url=url
                    )
                yield url, entry
            url = self._next_link(bundle, url, seen)

    def _next_link(self, bundle: dict[str, Any], current: str, seen: set[str]) -> str | None:
        for link in bundle.get("link") or ():
            if (
                isinstance(link, dict)
                and link.get("relation") == "next"
                and isinstance(link.get("url"), str)
            ):
                target = urljoin(current, str(link["url"]))
                host = urlsplit(target).netloc
                if host not in self._hosts:
                    raise FhirUnsafeLink(f"next link to another host refused: {host}", url=current)
                if target in seen:
                    raise FhirUnsafeLink(
                        f"next link loops back to a page already read: {target}", url=current
                    )
                seen.add(target)
                return target
        return None

    async def search_all(
        self, resource_type: str, params: dict[str, str], *, token: str | None = None
    ) -> list[dict[str, Any]]:
        return [resource async for resource in self.search(resource_type, params, token=token)]

    async def search_for_patient(
        self, resource_type: str, param: str, reference: str, *, token: str | None = None
    ) -> list[dict[str, Any]]:
        """`resource_type?{param}={reference}`, or, where the server refuses that search
        parameter, every resource of the type filtered here by its patient reference.

        Vendor note: FHIR R4 defines `ResearchSubject?patient=`, but sekmet-fhir 0.1.1 indexes
        no search parameter for ResearchSubject; with strict handling it answers 400
        not-supported. The full scan is cached for `scan_ttl_s` so a ranked list of many
        patients reads the type once.
        """
        if (resource_type, param) not in self._unsupported:
            try:
                return await self.search_all(resource_type, {param: reference}, token=token)
            except FhirFatalError as exc:
                if exc.http_status != 400 or not _refused_parameter(exc.outcome):
                    raise
                log.warning(
                    "%s?%s refused by the server; scanning %s instead",
                    resource_type,
                    param,
                    resource_type,
                )
                self._unsupported.add((resource_type, param))
        everything = await self._scan(resource_type, token)
        return [r for r in everything if _refers_to(r, reference)]

    async def _scan(self, resource_type: str, token: str | None) -> list[dict[str, Any]]:
        async with self._scan_lock:
            cached = self._scans.get(resource_type)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            found = await self.search_all(resource_type, {}, token=token)
            self._scans[resource_type] = (time.monotonic() + self.scan_ttl_s, found)
            return found

    async def read(
        self, resource_type: str, resource_id: str, *, token: str | None = None
    ) -> dict[str, Any]:
        return await self.get_json(
            urljoin(self.base_url, f"{resource_type}/{resource_id}"), token=token
        )

    async def capability(self) -> dict[str, Any]:
        return await self.get_json(urljoin(self.base_url, "metadata"))
