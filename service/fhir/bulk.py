"""FHIR Bulk Data export ($export, Bulk Data Access IG v2) to NDJSON files, or searches.

    export(client, out_dir, types=[...], level="system")  -> ExportResult
    search_to_ndjson(client, out_dir, plan)                -> ExportResult
    export_or_search(client, out_dir, plan)                -> ExportResult (either way)

Both ways write the same layout and nothing else: `<Type>-<n>.ndjson` in `out_dir` (n counts
from 1 per type), one resource a line, so `service.screening.screen(out_dir, ...)` reads the
result of either identically. `ExportResult.transaction_time` is what to pass as `since` next
time for an incremental run.

Flow (IG v2, "Bulk Data Export Operation Request Flow"): kick-off (GET with query parameters,
or POST with a Parameters resource) carrying `Prefer: respond-async` -> 202 + Content-Location
(the job's status URL) -> poll until 200 + manifest -> stream each output file to disk ->
read the error files -> DELETE the job, which tells the server it may free the files.
Requests go through the FhirClient's connection pool and auth.

What happens on each fault, by design:

    kick-off 404/405/501        BulkExportUnsupported. `export_or_search` then searches instead,
                                unless the CapabilityStatement declared $export: then the 404
                                means what it says (e.g. an unknown Group) and is raised.
    kick-off 429/502/503/504,   retried `transient_retries` times, honouring Retry-After.
      network errors
    kick-off other 4xx/5xx      BulkExportFailed with the server's OperationOutcome text.
    status or file URL on       FhirUnsafeLink before anything is sent there (our token would
      another host              go with it). `allow_hosts` admits a separate file server
                                explicitly: the client's rule for next links.
    poll 202                    wait for Retry-After (seconds or HTTP date) clamped to
                                [min_delay_s, max_delay_s]; without one, exponential backoff
                                from first_delay_s (the IG asks clients to back off). X-Progress
                                goes to the `progress` callback.
    poll 429                    the job is kept: wait as for 202, poll again.
    poll 5xx, network errors    retried up to `transient_retries` times in a row; a 5xx whose
                                OperationOutcome carries a non-transient issue code (the IG's
                                example: `processing`) means the job failed: at once.
    poll other 4xx / 5xx        BulkExportFailed naming the job URL, with the OperationOutcome.
    poll 404/410                BulkExportFailed: the job is gone (cancelled, expired).
    401/403 anywhere            FhirAuthError naming the URL (a token problem, not the job).
    poll_limit_s exceeded       the job is DELETEd; BulkExportTimeout names it and its last
                                X-Progress. The limit applies to each job's polling.
    any failure or cancel       the job is DELETEd (best effort) and the files this call wrote
      after the kick-off        are removed: `out_dir` never holds a partial export.
    download 429/5xx, network   the file is fetched again from its start (transient_retries
      error, truncated stream   times); it is written as `.<name>.part` and renamed only when
                                complete, so a half file never looks like data.
    download 404/410            the files were expired or cleaned up (`Expires` passed, or the
                                server restarted): the files of this run are removed and the
                                whole export is kicked off once more. Not just that file: the
                                files of one export are one snapshot at its transactionTime,
                                and mixing two snapshots would make `since` next time wrong.
                                Gone again in the second export: BulkFileGone naming the file.
    error files in manifest     downloaded and every OperationOutcome issue in them returned in
                                ExportResult.issues (first MAX_ISSUES_KEPT, all counted) and
                                logged. They are not kept in `out_dir`, which holds data only.
                                The export still succeeds (the IG's "partial success"); a
                                caller must look at `result.errors` before treating the data as
                                complete: absent records are no evidence of absence there.
    count != lines received     an issue (`error` when fewer lines than the manifest's count).
    `deleted` in manifest       read (Bundles of DELETE entries, IG v2, filled when `_since` is
                                given): ExportResult.deleted lists `Type/id`, for an incremental
                                sweep to remove from its snapshot. An unreadable line is an
                                issue and counted in `deleted_unreadable`: the caller cannot
                                know what it named (a sweep then exports in full).
    auth                        status polls always carry the client's Authorization; file
                                downloads only when the manifest says `requiresAccessToken`
                                (a pre-signed file URL must not receive our token). Redirects
                                are not followed (the client's pool is built that way).

`_typeFilter` is off by default: it is optional for servers and experimental in the IG, and
sekmet-fhir 0.1.1 gets it wrong (below). Without it an export carries every Observation, more
than the trial reads, but never less. `observation_type_filters(plan)` builds the IG's form
(one filter per code, ORed) for servers known to implement it.

The error tree gains, under service.errors:

    FhirFatalError
     ├── BulkExportUnsupported        the server offers no $export at this level
     ├── BulkExportFailed             kick-off refused, or the job reported failure
     └── FhirNotFound
          └── BulkFileGone            an output file was gone again after a second export
    FhirTemporaryError
     └── BulkExportTimeout            still running after poll_limit_s (the job was cancelled)

Vendor notes, sekmet-fhir 0.1.1 (the test server): system, Patient and Group $export work and
need `Prefer: respond-async` (400 without it); 202 + Content-Location `{base}/bulk-status/{id}`;
polls give 202 + `X-Progress` + `Retry-After: 1`; file URLs are absolute; downloads need the
token when auth is on. `_typeFilter` values are split at commas and several filters for one
type are ANDed, so neither `Observation?code=a,b` nor the IG's one-filter-per-code form
works there. `_since` is compared with `meta.lastUpdated` as a string, so we send UTC
instants with milliseconds and `Z`, its own format. Patient/Group exports leave out
ResearchSubject (not in its Patient compartment): `export_or_search` reads planned types
missing from a Patient/Group export by search. With enforced SMART scopes it maps methods to
scope letters: a POST kick-off needs `c` and DELETE on the status URL `d`, so with
`system/*.rs` use GET (the default) and expect the clean-up DELETE to be refused (logged,
harmless: the files stay until the server restarts).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar
from urllib.parse import quote, urljoin, urlsplit

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
from service.fhir.client import FhirClient
from service.fhir.ids import is_fhir_id
from service.fhir.patient import FetchPlan
from service.fhir.responses import (
    TRANSIENT_STATUSES,
    http_date,
    issues_of,
    operation_outcome,
    outcome_text,
    retry_after_s,
    status_error,
)
from service.mappers import subject_of

__all__ = [
    "BulkExportFailed",
    "BulkExportTimeout",
    "BulkExportUnsupported",
    "BulkFileGone",
    "BulkPolicy",
    "ExportFile",
    "ExportIssue",
    "ExportProgress",
    "ExportResult",
    "export",
    "export_or_search",
    "fhir_instant",
    "observation_type_filters",
    "offers_export",
    "plan_types",
    "retry_after_s",
    "search_to_ndjson",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

NDJSON = "application/fhir+ndjson"
FHIR_JSON = "application/fhir+json"
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
# IssueType codes under `transient` (FHIR R4 CodeSystem issue-type): "try again later".
TRANSIENT_ISSUES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)
MAX_ISSUES_KEPT = 1000
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
RESOURCE_REF = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# ---------------------------------------------------------------- errors
class BulkExportUnsupported(FhirFatalError):
    """The kick-off was answered 404/405/501: no $export here."""

    code = "not-supported"


class BulkExportFailed(FhirFatalError):
    """The server refused the kick-off or reported the job failed; `url` is the job."""

    code = "exception"


class BulkExportTimeout(FhirTemporaryError):
    """The job was still running after `poll_limit_s`; it has been cancelled."""


class BulkFileGone(FhirNotFound):
    """An output file was gone (404/410) in two exports in a row."""


# ---------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class ExportFile:
    type: str
    path: Path
    url: str | None  # None for files written from searches
    lines: int
    expected: int | None = None  # the manifest's `count`, when it gave one


@dataclass(frozen=True, slots=True)
class ExportIssue:
    severity: str  # fatal | error | warning | information
    code: str  # FHIR IssueType
    text: str
    source: str  # file URL:line, or what raised it

    def __str__(self) -> str:
        return f"{self.source}: {self.severity} {self.code}: {self.text}"


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """What the `progress` callback receives. `stage` is one of kick-off, in-progress,
    throttled, retry, download, search, complete."""

    stage: str
    message: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    method: Literal["bulk-export", "search"]
    transaction_time: datetime  # pass as `since` next time
    files: tuple[ExportFile, ...]
    issues: tuple[ExportIssue, ...] = ()
    issue_count: int = 0  # all issues, `issues` holds the first MAX_ISSUES_KEPT
    deleted: tuple[str, ...] = ()  # `Type/id` the manifest's `deleted` files name
    deleted_unreadable: int = 0  # lines of those files that could not be read
    job: str | None = None  # the status URL of the export that delivered the files
    request: str | None = None  # the manifest's `request`
    expires: datetime | None = None  # the manifest's `Expires` header
    kick_offs: int = 0
    searched: tuple[str, ...] = ()  # types read by search rather than by the export

    def counts(self) -> dict[str, int]:
        """Resources (lines) per type."""
        counts: dict[str, int] = {}
        for item in self.files:
            counts[item.type] = counts.get(item.type, 0) + item.lines
        return counts

    @property
    def errors(self) -> tuple[ExportIssue, ...]:
        """Issues of severity error or fatal: the data may be incomplete."""
        return tuple(i for i in self.issues if i.severity in ("error", "fatal"))


@dataclass(frozen=True)
class BulkPolicy:
    """How patiently to wait. Delays are in seconds."""

    first_delay_s: float = 1.0  # backoff start when the server sends no Retry-After
    min_delay_s: float = 1.0  # a smaller (or zero, or past) Retry-After is raised to this
    max_delay_s: float = 120.0  # a larger one is capped: the poll limit bounds the total
    transient_retries: int = 3  # failures in a row tolerated on one request
    concurrency: int = 4  # files downloaded at once

    def delay(self, retry_after: float | None, attempt: int) -> float:
        if retry_after is not None:
            return min(max(retry_after, self.min_delay_s), self.max_delay_s)
        return min(
            max(self.first_delay_s * 2.0 ** max(attempt - 1, 0), self.min_delay_s), self.max_delay_s
        )


# ---------------------------------------------------------------- small pure helpers
def fhir_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds and `Z` (sekmet compares `_since` as text)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("since must be timezone-aware (a naive time is ambiguous)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plan_types(plan: FetchPlan) -> list[str]:
    """The resource types a screen needs: Patient, Observation (if any codes), the rest."""
    types = ["Patient"]
    if plan.observation_codes:
        types.append("Observation")
    return [*types, *(t for t in plan.other_types if t not in types)]


def observation_type_filters(plan: FetchPlan) -> list[str]:
    """`_typeFilter` values narrowing Observation to the plan's codes, in the IG's form: one
    query per code, which a server ORs. Not for sekmet-fhir 0.1.1 (see module notes)."""
    return [f"Observation?code={quote(code, safe=':/|')}" for code in plan.observation_codes]


def _outcome_text(outcome: dict[str, Any] | None) -> str:
    text = outcome_text(outcome)
    return f": {text}" if text else ""


def _transient(outcome: dict[str, Any] | None) -> bool:
    """A 5xx without an OperationOutcome is infrastructure; with one, the codes say."""
    codes = {code for _, code, _ in issues_of(outcome)}
    return not codes or codes <= TRANSIENT_ISSUES


class _LineCounter:
    """Counts non-blank lines of a byte stream fed in chunks cut anywhere."""

    def __init__(self) -> None:
        self.lines = 0
        self.unterminated = False  # the stream so far ends inside a non-blank line

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        for line in parts[:-1]:
            if self.unterminated or line.strip():
                self.lines += 1
            self.unterminated = False
        if parts[-1].strip():
            self.unterminated = True

    def close(self) -> None:
        if self.unterminated:
            self.lines += 1


@dataclass(frozen=True)
class _Level:
    kind: Literal["system", "patient", "group"]
    group: str | None = None

    @classmethod
    def parse(cls, level: str) -> _Level:
        if level == "system":
            return cls("system")
        if level == "patient":
            return cls("patient")
        group = level.removeprefix("Group/")
        if not is_fhir_id(group):
            raise ValueError(f"level must be 'system', 'patient' or a Group id, not {level!r}")
        return cls("group", group)

    def path(self) -> str:
        if self.kind == "group":
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.kind == "patient" else "$export"


@dataclass(frozen=True)
class _Request:
    level: _Level
    types: tuple[str, ...]
    type_filters: tuple[str, ...]
    since: datetime | None
    method: Literal["GET", "POST"]

    def query(self) -> list[tuple[str, str]]:
        params = [("_outputFormat", NDJSON)]
        if self.types:
            params.append(("_type", ",".join(self.types)))
        if self.since is not None:
            params.append(("_since", fhir_instant(self.since)))
        # The IG lets a client repeat _typeFilter; repeating avoids commas inside one value.
        params.extend(("_typeFilter", f) for f in self.type_filters)
        return params

    def parameters(self) -> dict[str, Any]:
        values: list[dict[str, Any]] = []
        for name, value in self.query():
            kind = "valueInstant" if name == "_since" else "valueString"
            values.append({"name": name, kind: value})
        return {"resourceType": "Parameters", "parameter": values}


@dataclass(frozen=True)
class _Item:
    type: str
    url: str
    count: int | None


@dataclass(frozen=True)
class _Manifest:
    transaction_time: datetime
    request: str | None
    requires_access_token: bool
    output: tuple[_Item, ...]
    error: tuple[_Item, ...]
    deleted: tuple[_Item, ...]
    expires: datetime | None


class _Gone(Exception):
    """A manifest file answered 404/410."""

    def __init__(self, item: _Item, status: int) -> None:
        super().__init__(item.url)
        self.item = item
        self.status = status


# ---------------------------------------------------------------- session
class _Session:
    """One export's view of the client: its pool, auth and host rule, plus our timing."""

    def __init__(
        self,
        client: FhirClient,
        policy: BulkPolicy,
        allow_hosts: frozenset[str],
        sleep: Sleep,
        clock: Clock,
        progress: Callable[[ExportProgress], None] | None,
    ) -> None:
        self.client = client
        # FhirClient has no public accessor for its pool or its set of trusted hosts; using
        # them keeps one pool per process and one definition of "our server".
        self.http: httpx.AsyncClient = client._http
        self.hosts = frozenset(client._hosts) | allow_hosts
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self._progress = progress

    def report(self, stage: str, message: str, done: int = 0, total: int = 0) -> None:
        if self._progress is not None:
            self._progress(ExportProgress(stage, message, done, total))

    async def headers(self, accept: str, *, auth: bool = True) -> dict[str, str]:
        headers = {"Accept": accept}
        if auth:
            authorization = await self.client.auth.header(self.http)
            if authorization:
                headers["Authorization"] = authorization
        return headers

    def trusted(self, url: str, what: str, where: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc not in self.hosts:
            raise FhirUnsafeLink(
                f"{what} on another host refused: {parts.netloc or url} (from {where}); "
                "allow it explicitly with allow_hosts",
                url=where,
            )
        return url

    async def cancel(self, job: str, why: str) -> None:
        """DELETE the job; never raises (it is clean-up, often on the way out of a failure)."""
        try:
            response = await self.http.delete(job, headers=await self.headers(FHIR_JSON))
        except (httpx.HTTPError, FhirError) as exc:
            log.warning("could not DELETE export job %s (%s): %s", job, why, exc)
            return
        if response.status_code in (200, 202, 204, 404):
            log.info("export job %s deleted (%s)", job, why)
        else:
            log.warning("DELETE of export job %s (%s) answered %d", job, why, response.status_code)


# ---------------------------------------------------------------- kick-off and polling
async def _kick_off(s: _Session, request: _Request) -> str:  # noqa: PLR0912 (to be split with bulk.py)
    """Start the export; the absolute status URL (Content-Location)."""
    url = urljoin(s.client.base_url, request.level.path())
    # IG v2: respond-async is how a kick-off asks for the async pattern. handling=strict (as
    # the client sends on searches) makes a server refuse a parameter it would ignore.
    prefer = "respond-async, handling=strict" if s.client.strict else "respond-async"
    failures = 0
    while True:
        headers = {**await s.headers(FHIR_JSON), "Prefer": prefer}
        retry_after: float | None = None
        try:
            if request.method == "POST":
                headers["Content-Type"] = FHIR_JSON
                body = orjson.dumps(request.parameters())
                response = await s.http.post(url, content=body, headers=headers)
            else:
                response = await s.http.get(url, params=tuple(request.query()), headers=headers)
        except httpx.TransportError as exc:
            # A kick-off lost on the way back may have started a job we never hear of; the
            # server expires it. Retrying beats failing a sweep for a dropped connection.
            problem = f"$export kick-off at {url} failed: {exc!r}"
        else:
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
            detail = _outcome_text(outcome)
            if status in TRANSIENT_STATUSES:
                retry_after = retry_after_s(response.headers.get("Retry-After"))
                problem = f"$export kick-off at {url} answered {status}{detail}"
            elif status in UNSUPPORTED_STATUSES:
                raise BulkExportUnsupported(
                    f"no $export at {url} ({status}){detail}",
                    url=url,
                    http_status=status,
                    outcome=outcome,
                )
            elif status in (401, 403):
                raise status_error(status, outcome, url)
            elif status < 300:
                raise FhirMalformedResponse(
                    f"$export kick-off at {url} answered {status}, expected 202",
                    url=url,
                    http_status=status,
                )
            else:
                raise BulkExportFailed(
                    f"$export kick-off refused ({status}) at {url}{detail}",
                    url=url,
                    http_status=status,
                    outcome=outcome,
                )
        failures += 1
        if failures > s.policy.transient_retries:
            raise FhirTemporaryError(problem, url=url)
        delay = s.policy.delay(retry_after, failures)
        log.warning("%s; retry %d in %.1fs", problem, failures, delay)
        s.report("retry", problem)
        await s.sleep(delay)


async def _poll(s: _Session, job: str, limit_s: float) -> _Manifest:  # noqa: PLR0915 (to be split with bulk.py)
    """Poll the job until it completes; the parsed manifest."""
    started = s.clock()
    waits = 0  # answers "not yet" (202, 429): drives the backoff
    failures = 0  # transient failures in a row
    progress = ""
    while True:
        if s.clock() - started >= limit_s:
            raise BulkExportTimeout(
                f"export job {job} not complete after {limit_s:g}s "
                f"(last progress: {progress or 'none'}); cancelled",
                url=job,
            )
        retry_after: float | None = None
        try:
            # IG v2: status requests SHOULD accept application/json (the manifest is not FHIR).
            response = await s.http.get(job, headers=await s.headers("application/json"))
        except httpx.TransportError as exc:
            failures += 1
            if failures > s.policy.transient_retries:
                raise FhirTemporaryError(f"export job {job} unreachable: {exc!r}", url=job) from exc
            log.warning("polling export job %s failed (%r); retrying", job, exc)
            delay = s.policy.delay(None, failures)
        else:
            status = response.status_code
            retry_after = retry_after_s(response.headers.get("Retry-After"))
            if status == 200:
                return _manifest(response, job)
            if status == 202:
                failures = 0
                waits += 1
                # IG: X-Progress is free text under 100 characters
                progress = response.headers.get("X-Progress", "")[:100]
                s.report("in-progress", progress or "in progress")
                delay = s.policy.delay(retry_after, waits)
            elif status == 429:
                waits += 1
                log.warning("export job %s: 429 on polling; backing off, the job is kept", job)
                s.report("throttled", "429 Too Many Requests: polling less often")
                delay = s.policy.delay(retry_after, waits)
            else:
                outcome = operation_outcome(response)
                detail = _outcome_text(outcome)
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
                if not transient or failures >= s.policy.transient_retries:
                    raise BulkExportFailed(
                        f"export job {job} failed ({status}){detail}",
                        url=job,
                        http_status=status,
                        outcome=outcome,
                    )
                failures += 1
                log.warning("export job %s: %d on polling%s; retrying", job, status, detail)
                s.report("retry", f"{status} on polling")
                delay = s.policy.delay(retry_after, failures)
        remaining = limit_s - (s.clock() - started)
        await s.sleep(max(0.0, min(delay, remaining)))


def _items(value: Any, name: str, job: str) -> tuple[_Item, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FhirMalformedResponse(f"manifest `{name}` is not a list ({job})", url=job)
    items = []
    for entry in value:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("type"), str)
            or not isinstance(entry.get("url"), str)
        ):
            raise FhirMalformedResponse(
                f"manifest `{name}` item without type and url ({job})", url=job
            )
        count = entry.get("count")
        items.append(
            _Item(
                entry["type"],
                urljoin(job, entry["url"]),  # the IG says absolute; tolerate relative
                count if isinstance(count, int) and not isinstance(count, bool) else None,
            )
        )
    return tuple(items)


def _manifest(response: httpx.Response, job: str) -> _Manifest:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise FhirMalformedResponse(f"export manifest from {job} is not JSON", url=job) from exc
    if not isinstance(body, dict):
        raise FhirMalformedResponse(f"export manifest from {job} is not an object", url=job)
    try:
        transaction_time = datetime.fromisoformat(str(body["transactionTime"]))
    except (KeyError, ValueError) as exc:
        raise FhirMalformedResponse(
            f"export manifest from {job} has no valid transactionTime", url=job
        ) from exc
    if transaction_time.tzinfo is None:
        raise FhirMalformedResponse(f"transactionTime without offset from {job}", url=job)
    requires = body.get("requiresAccessToken")
    if not isinstance(requires, bool):
        # Required by the IG. Assume a token is needed: it only ever goes to trusted hosts.
        log.warning("manifest from %s lacks requiresAccessToken; sending the token", job)
        requires = True
    request = body.get("request")
    return _Manifest(
        transaction_time=transaction_time,
        request=request if isinstance(request, str) else None,
        requires_access_token=requires,
        output=_items(body.get("output"), "output", job),
        error=_items(body.get("error"), "error", job),
        deleted=_items(body.get("deleted"), "deleted", job),
        expires=http_date(response.headers.get("Expires")),
    )


# ---------------------------------------------------------------- downloads
async def _fetch(
    s: _Session,
    item: _Item,
    auth: bool,
    consume: Callable[[httpx.Response], Awaitable[T]],
) -> T:
    """Stream one manifest file into `consume`, from the start again on transient failures."""
    failures = 0
    while True:
        retry_after: float | None = None
        headers = await s.headers(NDJSON, auth=auth)
        try:
            async with s.http.stream("GET", item.url, headers=headers) as response:
                status = response.status_code
                if status == 200:
                    return await consume(response)
                await response.aread()
                outcome = operation_outcome(response)
                detail = _outcome_text(outcome)
                if status in (404, 410):
                    raise _Gone(item, status)
                if status in (401, 403):
                    raise status_error(status, outcome, item.url)
                if status not in TRANSIENT_STATUSES and status < 500:
                    raise FhirFatalError(
                        f"download of {item.url} answered {status}{detail}",
                        url=item.url,
                        http_status=status,
                        outcome=outcome,
                    )
                retry_after = retry_after_s(response.headers.get("Retry-After"))
                problem = f"download of {item.url} answered {status}"
        except httpx.TransportError as exc:  # includes a stream cut short
            problem = f"download of {item.url} failed: {exc!r}"
        failures += 1
        if failures > s.policy.transient_retries:
            raise FhirTemporaryError(problem, url=item.url)
        delay = s.policy.delay(retry_after, failures)
        log.warning("%s; retry %d in %.1fs", problem, failures, delay)
        await s.sleep(delay)


async def _save(s: _Session, item: _Item, path: Path, auth: bool) -> ExportFile:
    part = path.with_name(f".{path.name}.part")  # dot files are not read by a screen

    async def write(response: httpx.Response) -> ExportFile:
        counter = _LineCounter()
        try:
            with part.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    counter.feed(chunk)
                if counter.unterminated:
                    out.write(b"\n")  # so the last resource is a whole line for the reader
            counter.close()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(path)
        return ExportFile(item.type, path, item.url, counter.lines, item.count)

    return await _fetch(s, item, auth, write)


async def _read_errors(s: _Session, item: _Item, auth: bool) -> list[ExportIssue]:
    async def parse(response: httpx.Response) -> list[ExportIssue]:
        found: list[ExportIssue] = []
        number = 0
        async for line in response.aiter_lines():
            number += 1
            if not line.strip():
                continue
            where = f"{item.url}:{number}"
            try:
                outcome = orjson.loads(line)
            except orjson.JSONDecodeError:
                found.append(ExportIssue("error", "structure", "unreadable error line", where))
                continue
            if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
                found.append(ExportIssue("error", "structure", "not an OperationOutcome", where))
                continue
            issues = issues_of(outcome) or [("error", "unknown", "OperationOutcome without issue")]
            found.extend(ExportIssue(sev, code, text, where) for sev, code, text in issues)
        return found

    return await _fetch(s, item, auth, parse)


async def _read_deleted(s: _Session, item: _Item, auth: bool) -> tuple[list[str], int]:
    """`Type/id` of every DELETE entry in a `deleted` file (one Bundle a line), and how many
    lines could not be read."""

    async def parse(response: httpx.Response) -> tuple[list[str], int]:
        found: list[str] = []
        unreadable = 0
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                bundle = orjson.loads(line)
                entries = bundle["entry"] if bundle.get("resourceType") == "Bundle" else None
                if not isinstance(entries, list):
                    raise TypeError("not a Bundle with entries")
                for entry in entries:
                    request = entry["request"]
                    url = str(request["url"]).split("?")[0].split("/_history/")[0].strip("/")
                    if request.get("method") != "DELETE" or not RESOURCE_REF.fullmatch(url):
                        raise ValueError(f"not a DELETE of Type/id: {url!r}")
                    found.append(url)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                unreadable += 1
        return found, unreadable

    return await _fetch(s, item, auth, parse)


async def _download_all(
    s: _Session, manifest: _Manifest, out_dir: Path, job: str, written: list[Path]
) -> tuple[list[ExportFile], list[ExportIssue], list[str], int]:
    for item in (*manifest.output, *manifest.error, *manifest.deleted):
        s.trusted(item.url, "export file URL", job)
    auth = manifest.requires_access_token
    numbers: dict[str, int] = {}
    targets = []
    for item in manifest.output:
        if not RESOURCE_TYPE.fullmatch(item.type):
            raise FhirMalformedResponse(f"manifest output type {item.type!r} ({job})", url=job)
        numbers[item.type] = numbers.get(item.type, 0) + 1
        path = out_dir / f"{item.type}-{numbers[item.type]}.ndjson"
        written.append(path)
        targets.append((item, path))
    total = len(targets) + len(manifest.error) + len(manifest.deleted)
    gate = asyncio.Semaphore(s.policy.concurrency)
    done = 0

    async def one(work: Awaitable[T]) -> T:
        nonlocal done
        async with gate:
            result = await work
        done += 1
        s.report("download", f"{done} of {total} files", done, total)
        return result

    saves = [asyncio.ensure_future(one(_save(s, item, path, auth))) for item, path in targets]
    reads = [asyncio.ensure_future(one(_read_errors(s, item, auth))) for item in manifest.error]
    deletions = [
        asyncio.ensure_future(one(_read_deleted(s, item, auth))) for item in manifest.deleted
    ]
    tasks: list[asyncio.Future[Any]] = [*saves, *reads, *deletions]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    files = [task.result() for task in saves]
    issues = [issue for task in reads for issue in task.result()]
    deleted = [ref for task in deletions for ref in task.result()[0]]
    unreadable = sum(task.result()[1] for task in deletions)
    if unreadable:
        issues.append(
            ExportIssue(
                "error",
                "structure",
                f"{unreadable} line(s) of the `deleted` files unreadable: deletions unknown",
                job,
            )
        )
    for export_file in files:
        if export_file.expected is not None and export_file.expected != export_file.lines:
            fewer = export_file.lines < export_file.expected
            issues.append(
                ExportIssue(
                    "error" if fewer else "warning",
                    "incomplete" if fewer else "informational",
                    f"{export_file.lines} lines, manifest count {export_file.expected}",
                    export_file.url or str(export_file.path),
                )
            )
    return files, issues, deleted, unreadable


def _prepare(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        # Files of another run would be screened with this one's; a fresh directory each time.
        raise ValueError(f"out_dir must be empty: {out_dir}")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.part").unlink(missing_ok=True)
    paths.clear()


# ---------------------------------------------------------------- export
async def export(  # noqa: PLR0913 (to be split with bulk.py)
    client: FhirClient,
    out_dir: Path,
    *,
    types: Sequence[str],
    level: str = "system",
    type_filters: Sequence[str] | None = None,
    since: datetime | None = None,
    poll_limit_s: float = 3600.0,
    progress: Callable[[ExportProgress], None] | None = None,
    method: Literal["GET", "POST"] = "GET",
    policy: BulkPolicy | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    delete_when_done: bool = True,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> ExportResult:
    """Bulk-export `types` at `level` ("system", "patient", or a Group id) into `out_dir`.

    `out_dir` must be empty or absent. `since` (timezone-aware) asks only for resources
    changed since then: pass the previous result's `transaction_time`. Faults are handled as
    the module docstring lists; on return every output file is complete on disk.
    """
    bad = [t for t in types if not RESOURCE_TYPE.fullmatch(t)]
    if bad:
        raise ValueError(f"not resource types: {bad}")
    request = _Request(
        _Level.parse(level),
        tuple(types),
        tuple(type_filters or ()),
        since,
        method,
    )
    if since is not None:
        fhir_instant(since)  # refuse a naive time before anything is sent
    _prepare(out_dir)
    s = _Session(client, policy or BulkPolicy(), allow_hosts, sleep, clock, progress)
    written: list[Path] = []
    lost: _Gone | None
    for kick_off in (1, 2):
        job = await _kick_off(s, request)
        s.report("kick-off", job)
        log.info("export job %s started (%s)", job, request.level.path())
        try:
            manifest = await _poll(s, job, poll_limit_s)
            try:
                files, issues, deleted, unreadable = await _download_all(
                    s, manifest, out_dir, job, written
                )
            except _Gone as gone:
                lost = gone
            else:
                lost = None
        except (Exception, asyncio.CancelledError) as exc:
            _remove(written)
            await s.cancel(job, type(exc).__name__)
            raise
        if lost is not None:
            _remove(written)
            await s.cancel(job, "a file was gone")
            expiry = f", expiring {manifest.expires.isoformat()}" if manifest.expires else ""
            if kick_off == 2:
                raise BulkFileGone(
                    f"export file {lost.item.url} ({lost.item.type}) gone ({lost.status}) "
                    f"again after a fresh export (job {job}{expiry})",
                    url=lost.item.url,
                    http_status=lost.status,
                )
            log.warning(
                "export file %s gone (%d%s); kicking off the export once more",
                lost.item.url,
                lost.status,
                expiry,
            )
            continue
        if delete_when_done:
            await s.cancel(job, "files downloaded")
        kept = issues[:MAX_ISSUES_KEPT]
        if issues:
            errors = sum(i.severity in ("error", "fatal") for i in issues)
            log.warning(
                "export job %s reported %d issue(s), %d error(s); first: %s",
                job,
                len(issues),
                errors,
                issues[0],
            )
        for issue in kept:
            log.info("export issue %s", issue)
        s.report("complete", f"{len(files)} files", len(files), len(files))
        return ExportResult(
            out_dir=out_dir,
            method="bulk-export",
            transaction_time=manifest.transaction_time,
            files=tuple(files),
            issues=tuple(kept),
            issue_count=len(issues),
            deleted=tuple(deleted),
            deleted_unreadable=unreadable,
            job=job,
            request=manifest.request,
            expires=manifest.expires,
            kick_offs=kick_off,
        )
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- search fallback
@dataclass
class _Writer:
    """Writes resources as `<Type>-1.ndjson`, opening a file only when it gets a line."""

    out_dir: Path
    written: list[Path]
    handles: dict[str, BinaryIO] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def write(self, kind: str, resource: dict[str, Any]) -> None:
        handle = self.handles.get(kind)
        if handle is None:
            path = self.out_dir / f"{kind}-1.ndjson"
            self.written.append(path)
            handle = self.handles[kind] = path.open("wb")
            self.lines[kind] = 0
        handle.write(orjson.dumps(resource) + b"\n")
        self.lines[kind] += 1

    def close(self) -> list[ExportFile]:
        for handle in self.handles.values():
            handle.close()
        return [
            ExportFile(kind, self.out_dir / f"{kind}-1.ndjson", None, count)
            for kind, count in self.lines.items()
        ]


async def _group_members(client: FhirClient, group: str) -> frozenset[str]:
    """`Patient/<id>` of every member of the Group."""
    resource = await client.read("Group", group)
    members = set()
    for member in resource.get("member") or ():
        reference = (
            (member.get("entity") or {}).get("reference") if isinstance(member, dict) else None
        )
        if isinstance(reference, str) and "Patient/" in reference:
            members.add("Patient/" + reference.split("Patient/")[-1].split("/_history/")[0])
    return frozenset(members)


async def _search_types(
    client: FhirClient,
    writer: _Writer,
    types: Sequence[str],
    plan: FetchPlan,
    since: datetime | None,
    members: frozenset[str] | None,
    s: _Session,
) -> None:
    """Page each type with plain searches into `writer`; Observation by the plan's codes,
    except with `since`: then every changed Observation, so that one recoded out of the
    plan's codes reaches the caller (which must drop its previous version)."""
    base: dict[str, str] = {}
    if since is not None:
        base["_lastUpdated"] = f"ge{fhir_instant(since)}"  # ge: overlap rather than miss
    for kind in types:
        if kind == "Observation" and since is None:
            queries = [{**base, "code": codes} for codes in plan.observation_queries()]
        else:
            queries = [base]
        # An Observation coded in two chunks (a local and a LOINC code) comes back twice.
        seen: set[str] | None = set() if len(queries) > 1 else None
        for params in queries:
            async for resource in client.search(kind, params):
                if members is not None and subject_of(resource) not in members:
                    continue
                if seen is not None:
                    key = str(resource.get("id"))
                    if key in seen:
                        continue
                    seen.add(key)
                writer.write(kind, resource)
        s.report("search", f"{kind}: {writer.lines.get(kind, 0)}")


async def search_to_ndjson(
    client: FhirClient,
    out_dir: Path,
    plan: FetchPlan,
    *,
    level: str = "system",
    since: datetime | None = None,
    types: Sequence[str] | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportResult:
    """Read what a screen needs with searches and write the export layout into `out_dir`.

    For servers without $export. Patient and every planned type are paged with the client
    (its retries, strict handling, next-link checks); Observation only for the plan's codes.
    A Group level reads the Group and keeps its members' resources (every resource of each
    type is still read: there is no portable "patient in list" search). Unlike an export,
    the searches are no snapshot: a record changed meanwhile may show in one type and not
    another. `transaction_time` is our clock before the first request, so using it as
    `since` next time overlaps rather than misses.
    """
    parsed = _Level.parse(level)
    if since is not None:
        fhir_instant(since)
    _prepare(out_dir)
    started = datetime.now(UTC)
    s = _Session(client, BulkPolicy(), frozenset(), asyncio.sleep, time.monotonic, progress)
    members = await _group_members(client, parsed.group) if parsed.group else None
    wanted = list(types) if types is not None else plan_types(plan)
    written: list[Path] = []
    writer = _Writer(out_dir, written)
    try:
        await _search_types(client, writer, wanted, plan, since, members, s)
    except BaseException:
        writer.close()
        _remove(written)
        raise
    files = writer.close()
    s.report("complete", f"{len(files)} files", len(files), len(files))
    return ExportResult(
        out_dir=out_dir,
        method="search",
        transaction_time=started,
        files=tuple(files),
        searched=tuple(wanted),
    )


# ---------------------------------------------------------------- either way
async def offers_export(client: FhirClient, level: str = "system") -> bool | None:
    """Whether the CapabilityStatement declares $export at `level`; None if unreadable."""
    kind = _Level.parse(level).kind
    try:
        capability = await client.capability()
    except FhirError as exc:
        log.warning("CapabilityStatement unreadable (%s); trying $export anyway", exc.message)
        return None
    for rest in capability.get("rest") or ():
        if not isinstance(rest, dict):
            continue
        if kind == "system":
            operations = rest.get("operation") or ()
        else:
            wanted = "Patient" if kind == "patient" else "Group"
            operations = next(
                (
                    r.get("operation") or ()
                    for r in rest.get("resource") or ()
                    if isinstance(r, dict) and r.get("type") == wanted
                ),
                (),
            )
        names = {str(op.get("name", "")).lstrip("$") for op in operations if isinstance(op, dict)}
        if "export" in names:
            return True
    return False


async def export_or_search(
    client: FhirClient,
    out_dir: Path,
    plan: FetchPlan,
    *,
    level: str = "system",
    since: datetime | None = None,
    poll_limit_s: float = 3600.0,
    progress: Callable[[ExportProgress], None] | None = None,
    use_type_filter: bool = False,
    policy: BulkPolicy | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> ExportResult:
    """What a screen needs, by $export where the server offers it, else by searches.

    Falls back when the CapabilityStatement lacks $export at `level`, or when it could not
    be read and the kick-off answers 404/405/501. After a Patient/Group-level export, planned
    types without a file are read by search (a server may leave types out of its compartment
    export; where there are none, the search finds none).
    """
    types = plan_types(plan)
    offered = await offers_export(client, level)
    if offered is False:
        log.warning("the server declares no $export at level %s; searching instead", level)
        return await search_to_ndjson(
            client, out_dir, plan, level=level, since=since, progress=progress
        )
    try:
        result = await export(
            client,
            out_dir,
            types=types,
            level=level,
            type_filters=observation_type_filters(plan) if use_type_filter else None,
            since=since,
            poll_limit_s=poll_limit_s,
            progress=progress,
            policy=policy,
            allow_hosts=allow_hosts,
            sleep=sleep,
            clock=clock,
        )
    except BulkExportUnsupported as exc:
        if offered:
            raise
        log.warning("%s; searching instead", exc.message)
        return await search_to_ndjson(
            client, out_dir, plan, level=level, since=since, progress=progress
        )
    parsed = _Level.parse(level)
    missing = [t for t in types if t not in result.counts()]
    if parsed.kind == "system" or not missing:
        return result
    log.info("types without a file in the %s export, read by search: %s", level, missing)
    s = _Session(client, policy or BulkPolicy(), allow_hosts, sleep, clock, progress)
    members = await _group_members(client, parsed.group) if parsed.group else None
    written: list[Path] = []
    writer = _Writer(out_dir, written)
    try:
        await _search_types(client, writer, missing, plan, since, members, s)
    except BaseException:
        writer.close()
        _remove([*written, *(f.path for f in result.files)])
        raise
    return ExportResult(
        out_dir=result.out_dir,
        method=result.method,
        transaction_time=result.transaction_time,
        files=(*result.files, *writer.close()),
        issues=result.issues,
        issue_count=result.issue_count,
        deleted=result.deleted,
        deleted_unreadable=result.deleted_unreadable,
        job=result.job,
        request=result.request,
        expires=result.expires,
        kick_offs=result.kick_offs,
        searched=tuple(missing),
    )
