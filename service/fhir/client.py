"""Async FHIR R4 client: search, read, batch, transaction; paging, retries, typed errors.

One `httpx.AsyncClient` (connection pool) per process, shared by every request, with the
credentials bound to the server's own host (service/fhir/auth.py: a 401 gets one new token
and one more try). Searches follow `Bundle.link[next]` to the end, refusing a next link to
another host or one already visited. Every request goes through the one retry helper
(service/fhir/transport.py): temporary failures (timeouts, connection errors,
429/502/503/504) are retried with exponential backoff and full jitter, honouring
`Retry-After`, a bounded number of times; everything else fails at once with an error that
names the URL and carries the server's OperationOutcome when it sent one. A `transaction`
(a write) is sent once and never retried.

Vendor notes: some servers return absolute next links on an internal host name behind a
proxy; set `allow_hosts` to accept those explicitly rather than disabling the check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from service.errors import (
    FhirAuthError,
    FhirError,
    FhirFatalError,
    FhirMalformedResponse,
    FhirTemporaryError,
    FhirUnsafeLink,
)
from service.fhir.auth import Auth, HostBound, NoAuth, StaticBearer
from service.fhir.responses import (
    TRANSIENT_STATUSES,
    answer_text,
    operation_outcome,
    retry_after_s,
    status_error,
)
from service.fhir.transport import Retry, RetryPolicy, network_error, send

__all__ = ["ONCE", "FhirClient", "RetryPolicy"]

log = logging.getLogger(__name__)
# A batch POST answered so says the server does not do batch (whatever its CapabilityStatement
# declared): the caller asks one request at a time instead.
BATCH_REFUSED = frozenset({404, 405, 501})
FHIR_JSON = "application/fhir+json"
ONCE = RetryPolicy(attempts=1)  # for writes: sent once, whatever happens
T = TypeVar("T")


def _refused_parameter(outcome: dict[str, Any] | None) -> bool:
    codes = {issue.get("code") for issue in (outcome or {}).get("issue") or ()}
    return bool(codes & {"not-supported", "invalid", "processing"})


def _refusal_in(page: dict[str, Any]) -> dict[str, Any] | None:
    """The OperationOutcome entry (search mode `outcome`) of a searchset page saying that a
    search parameter was not used, if there is one."""
    for entry in page.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
            continue
        issues = [
            issue
            for issue in resource.get("issue") or ()
            if isinstance(issue, dict) and issue.get("severity") != "information"
        ]
        if _refused_parameter({"issue": issues}):
            return resource
    return None


def _declares_batch(statement: dict[str, Any]) -> bool:
    """Whether a CapabilityStatement declares the system interaction `batch` (server mode)."""
    for rest in statement.get("rest") or ():
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        for interaction in rest.get("interaction") or ():
            if isinstance(interaction, dict) and interaction.get("code") == "batch":
                return True
    return False


def _batch_answer(entry: object, url: str) -> dict[str, Any] | FhirError:
    """One entry of a batch-response: its resource, or the error its status stands for."""
    response = entry.get("response") if isinstance(entry, dict) else None
    status = str(response.get("status", "")).split(" ")[0] if isinstance(response, dict) else ""
    if not isinstance(entry, dict) or not isinstance(response, dict) or not status.isdigit():
        return FhirMalformedResponse(f"batch entry without a response status for {url}", url=url)
    if int(status) >= 300:
        outcome = response.get("outcome") or entry.get("resource")
        if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
            outcome = None
        return status_error(int(status), outcome, url)
    resource = entry.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return FhirMalformedResponse(f"batch entry without a resource for {url}", url=url)
    return resource


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
        self._hosts = frozenset({urlsplit(self.base_url).netloc, *allow_hosts})
        self._sleep = sleep
        self.scan_ttl_s = scan_ttl_s
        self._unsupported: set[tuple[str, str]] = set()
        self._scans: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._scan_lock = asyncio.Lock()
        self._batch: bool | None = None  # the CapabilityStatement's answer, once read
        self._batch_lock = asyncio.Lock()
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
    def trusted(
        self, url: str, what: str, where: str, allow_hosts: frozenset[str] = frozenset()
    ) -> str:
        """`url` if it is on the server's host (or one of `allow_hosts`); FhirUnsafeLink
        naming `what` and where it came from otherwise, before anything is sent there."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc not in self._hosts | allow_hosts:
            raise FhirUnsafeLink(
                f"{what} on another host refused: {parts.netloc or url} (from {where}); "
                "allow it explicitly with allow_hosts",
                url=where,
            )
        return url

    def signed(
        self, token: str | None = None, allow_hosts: frozenset[str] = frozenset()
    ) -> httpx.Auth:
        """The credentials a request carries: the caller's `token` instead of the client's
        when given; only ever to the server's host (or `allow_hosts`)."""
        auth: Auth = StaticBearer(token) if token else self.auth
        return HostBound(auth, self._hosts | allow_hosts)

    def build(
        self,
        method: str,
        url: str,
        *,
        accept: str = FHIR_JSON,
        params: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        """A request through the client's pool (its timeout), accepting `accept`."""
        wanted = {"Accept": accept, **(headers or {})}
        if content is not None:
            wanted.setdefault("Content-Type", FHIR_JSON)
        return self._http.build_request(method, url, params=params, headers=wanted, content=content)

    async def send(
        self,
        request: httpx.Request,
        classify: Callable[[httpx.Response], Awaitable[T | Retry]],
        *,
        auth: httpx.Auth | None,
        policy: RetryPolicy | None = None,
        stream: bool = False,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        on_network_error: Callable[[httpx.TransportError, httpx.Request], FhirError] | None = None,
        on_retry: Callable[[FhirError], None] | None = None,
    ) -> T:
        """`request` through the one retry helper (service/fhir/transport.py), with the
        client's pool and, unless given, its policy and sleep."""
        return await send(
            self._http,
            request,
            policy=policy or self.retry,
            classify=classify,
            auth=auth,
            stream=stream,
            sleep=sleep or self._sleep,
            on_network_error=on_network_error or network_error,
            on_retry=on_retry,
        )

    async def send_once(
        self, request: httpx.Request, *, auth: httpx.Auth | None, stream: bool = False
    ) -> httpx.Response:
        """`request` sent once, the answer as it is (a Bulk status poll, a job's DELETE)."""
        return await self._http.send(request, auth=auth, stream=stream)

    async def get_json(
        self, url: str, *, token: str | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """GET a FHIR JSON resource, retrying temporary failures. `token` overrides auth."""
        return await self._request("GET", url, token=token, params=params)

    async def post_json(
        self, url: str, body: dict[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        """POST a FHIR JSON resource and read the answer, retrying temporary failures like
        `get_json`: only for requests that are safe to repeat (a batch of reads)."""
        return await self._request("POST", url, token=token, content=orjson.dumps(body))

    async def transaction(
        self, bundle: dict[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        """POST a `transaction` Bundle to the base URL (FHIR R4 3.1.0.11) and return the
        transaction-response. Sent once, never retried: a write whose answer was lost may
        have been applied, and the caller decides whether to send it again. A 401 still gets
        one new token and one more try (the server did not act on it: service/fhir/auth.py).
        Any non-2xx raises the error its status stands for, saying what the server said; a
        2xx without a readable body gives {}."""
        url = self.base_url.rstrip("/")
        request = self.build("POST", url, content=orjson.dumps(bundle))

        async def classify(response: httpx.Response) -> dict[str, Any]:
            await response.aread()
            if response.status_code >= 300:
                outcome = operation_outcome(response)
                raise status_error(response.status_code, outcome, url, answer_text(response))
            # The write is done whatever the body says: an unreadable one is no failure.
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                return {}
            return body if isinstance(body, dict) else {}

        return await self.send(request, classify, auth=self.signed(token), policy=ONCE)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        token: str | None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if self.strict:
            # Fail loudly when the server ignores a search parameter (FHIR R4 3.1.1.5.3),
            # instead of silently returning more (or other) resources than asked for.
            headers["Prefer"] = "handling=strict"
        request = self.build(method, url, params=params, content=content, headers=headers)

        async def classify(response: httpx.Response) -> dict[str, Any] | Retry:
            await response.aread()
            if response.status_code in TRANSIENT_STATUSES:
                error = FhirTemporaryError(
                    f"FHIR server answered {response.status_code} for {url}",
                    url=url,
                    http_status=response.status_code,
                    outcome=operation_outcome(response),
                )
                return Retry(error, retry_after_s(response.headers.get("Retry-After")))
            return self._parse(response, url)

        return await self.send(request, classify, auth=self.signed(token))

    def _parse(self, response: httpx.Response, url: str) -> dict[str, Any]:
        status = response.status_code
        if status >= 400:
            raise status_error(status, operation_outcome(response), url)
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
    def search_url(self, path: str, params: dict[str, str]) -> str:
        """The absolute URL of the first page of `path?params`, with the client's page size."""
        query = {"_count": str(self.page_size), **params}
        # Built once: httpx validates a long code=... query character by character.
        return str(httpx.URL(urljoin(self.base_url, path), params=query))

    def resource_url(self, resource_type: str, resource_id: str) -> str:
        return urljoin(self.base_url, f"{resource_type}/{resource_id}")

    async def search(
        self, resource_type: str, params: dict[str, str], *, token: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every resource of `resource_type` matching `params`, across all pages.

        Included resources (search mode `include`) and OperationOutcomes are skipped.
        """
        entries = self._entries(self.search_url(resource_type, params), "searchset", token)
        async for resource in self._matches(resource_type, entries):
            yield resource

    async def search_from(
        self,
        resource_type: str,
        url: str,
        first_page: dict[str, Any],
        *,
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """The matches of a search whose first page (the answer to `url`) was read already,
        in a batch, and of every page after it, read and checked as `search` reads them.

        Vendor note: a batch entry cannot carry a Prefer header (R4 Bundle.entry.request has
        no field for it), and sekmet-fhir 0.1.1 searches batch entries leniently: an unknown
        parameter is ignored, with a warning OperationOutcome entry. With strict handling
        that page is taken for the 400 a direct search would have got.
        """
        if self.strict and (refusal := _refusal_in(first_page)) is not None:
            raise status_error(400, refusal, url)
        entries = self._entries(url, "searchset", token, first_page)
        return [resource async for resource in self._matches(resource_type, entries)]

    async def _matches(
        self, resource_type: str, entries: AsyncIterator[tuple[str, dict[str, Any]]]
    ) -> AsyncIterator[dict[str, Any]]:
        async for url, entry in entries:
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
        first = self.search_url(f"{resource_type}/_history", params)
        async for _, entry in self._entries(first, "history", token):
            yield entry

    async def _entries(
        self,
        first: str,
        bundle_type: str,
        token: str | None,
        first_page: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(page URL, entry) for every entry of a paged Bundle of `bundle_type` starting at
        `first` (whose page is `first_page` when it was read already)."""
        url: str | None = first
        seen: set[str] = {first}
        pages = 0
        while url is not None:
            pages += 1
            if pages > self.max_pages:
                path = urlsplit(first).path
                raise FhirUnsafeLink(f"more than {self.max_pages} pages for {path}", url=url)
            if pages == 1 and first_page is not None:
                bundle = first_page
            else:
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
        if self.searchable(resource_type, param):
            try:
                return await self.search_all(resource_type, {param: reference}, token=token)
            except FhirFatalError as exc:
                if not self.refused(resource_type, param, exc):
                    raise
        everything = await self._scan(resource_type, token)
        return [r for r in everything if _refers_to(r, reference)]

    def searchable(self, resource_type: str, param: str) -> bool:
        """False once the server refused `resource_type?{param}=` (see `refused`)."""
        return (resource_type, param) not in self._unsupported

    def refused(self, resource_type: str, param: str, error: FhirError) -> bool:
        """Whether `error` is the server refusing the search parameter `param` of
        `resource_type` (400 not-supported/invalid/processing); remembered if so, and
        `search_for_patient` scans the type from then on."""
        if error.http_status != 400 or not _refused_parameter(error.outcome):
            return False
        log.warning(
            "%s?%s refused by the server; scanning %s instead", resource_type, param, resource_type
        )
        self._unsupported.add((resource_type, param))
        return True

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
        return await self.get_json(self.resource_url(resource_type, resource_id), token=token)

    async def capability(self) -> dict[str, Any]:
        return await self.get_json(urljoin(self.base_url, "metadata"))

    # ------------------------------------------------------------------ batch
    async def supports_batch(self) -> bool:
        """Whether the server declares the system interaction `batch`: the CapabilityStatement
        is read once per client. A temporary failure to read it means no batch this time,
        and is asked again next time; any other failure means no batch."""
        if self._batch is not None:
            return self._batch
        async with self._batch_lock:  # concurrent first callers read the statement once
            if self._batch is None:
                try:
                    self._batch = _declares_batch(await self.capability())
                except FhirTemporaryError as exc:
                    log.warning("no CapabilityStatement now (%s): no batch", exc.message)
                    return False
                except FhirError as exc:
                    log.warning("no CapabilityStatement (%s): no batch", exc.message)
                    self._batch = False
            return self._batch

    async def batch_get(
        self, urls: Sequence[str], *, token: str | None = None
    ) -> list[dict[str, Any] | FhirError] | None:
        """GET every URL (absolute, under the base URL) in one `batch` Bundle (FHIR R4
        3.1.0.11): per URL, the resource its entry answered, or the error its status stands
        for, as `get_json` would have raised it.

        Only GETs, so the POST is safe to retry like one. None when the server answers
        404/405/501 (batch is then remembered as unsupported) or 401/403 (see below): the
        caller asks one by one. Any other failure of the whole batch (temporary after the
        retries, 5xx, malformed) raises.

        Vendor note: sekmet-fhir 0.1.1 authorises a batch POST as a create on every type, so
        a read-only token (`system/*.rs`) gets 403 for reads it may make one by one. A 401/403
        is therefore no answer about the reads: they are asked one by one, and give the real
        one. It is remembered for the client's own credentials (their scopes do not change),
        not for a user's token (another user's may allow it).
        """
        entries = [{"request": {"method": "GET", "url": self._relative(url)}} for url in urls]
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        where = self.base_url.rstrip("/")
        try:
            answer = await self.post_json(where, bundle, token=token)
        except FhirFatalError as exc:
            if exc.http_status in BATCH_REFUSED or (exc.http_status == 403 and token is None):
                log.warning("batch refused (%s): one request at a time from now on", exc.message)
                self._batch = False
                return None
            if isinstance(exc, FhirAuthError):
                log.info("batch refused (%s): one request at a time", exc.message)
                return None
            raise
        answered = answer.get("entry")
        if (
            answer.get("resourceType") != "Bundle"
            or answer.get("type") != "batch-response"
            or not isinstance(answered, list)
            or len(answered) != len(urls)
        ):
            raise FhirMalformedResponse(
                f"expected a batch-response Bundle of {len(urls)} entries from {where}", url=where
            )
        return [_batch_answer(entry, url) for entry, url in zip(answered, urls, strict=True)]

    def _relative(self, url: str) -> str:
        if not url.startswith(self.base_url):
            raise ValueError(f"not under the base URL {self.base_url}: {url}")
        return url[len(self.base_url) :]
