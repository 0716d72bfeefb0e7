"""Reading what a completed export job answers: the manifest (IG v2, "Response - Complete
Status"), and the lines of its `error` and `deleted` files. Pure: bytes in, values out."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import orjson

from service.errors import FhirMalformedResponse
from service.fhir.bulk.results import ExportIssue
from service.fhir.responses import http_date, issues_of

__all__ = ["Manifest", "ManifestItem", "deleted_in", "issues_in", "parse_manifest"]

log = logging.getLogger(__name__)
RESOURCE_REF = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class ManifestItem:
    type: str
    url: str
    count: int | None


@dataclass(frozen=True)
class Manifest:
    transaction_time: datetime
    request: str | None
    requires_access_token: bool
    output: tuple[ManifestItem, ...]
    error: tuple[ManifestItem, ...]
    deleted: tuple[ManifestItem, ...]
    expires: datetime | None


def _items(value: Any, name: str, job: str) -> tuple[ManifestItem, ...]:
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
            ManifestItem(
                entry["type"],
                urljoin(job, entry["url"]),  # the IG says absolute; tolerate relative
                count if isinstance(count, int) and not isinstance(count, bool) else None,
            )
        )
    return tuple(items)


def parse_manifest(content: bytes, expires: str | None, job: str) -> Manifest:
    """The manifest `content` of the job at `job` (relative file URLs resolved against it);
    `expires` is the answer's Expires header. FhirMalformedResponse when it is not one."""
    try:
        body = orjson.loads(content)
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
    return Manifest(
        transaction_time=transaction_time,
        request=request if isinstance(request, str) else None,
        requires_access_token=requires,
        output=_items(body.get("output"), "output", job),
        error=_items(body.get("error"), "error", job),
        deleted=_items(body.get("deleted"), "deleted", job),
        expires=http_date(expires),
    )


def issues_in(line: str, where: str) -> list[ExportIssue]:
    """The issues one line of an `error` file (an OperationOutcome) reports; a line that is
    not one is itself an issue."""
    try:
        outcome = orjson.loads(line)
    except orjson.JSONDecodeError:
        return [ExportIssue("error", "structure", "unreadable error line", where)]
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return [ExportIssue("error", "structure", "not an OperationOutcome", where)]
    issues = issues_of(outcome) or [("error", "unknown", "OperationOutcome without issue")]
    return [ExportIssue(sev, code, text, where) for sev, code, text in issues]


def deleted_in(line: str) -> list[str]:
    """`Type/id` of every DELETE entry in one line of a `deleted` file (a Bundle); ValueError
    when the line is anything else (its deletions are then unknown)."""
    try:
        bundle = orjson.loads(line)
        entries = bundle["entry"] if bundle.get("resourceType") == "Bundle" else None
        if not isinstance(entries, list):
            raise TypeError("not a Bundle with entries")
        found = []
        for entry in entries:
            request = entry["request"]
            url = str(request["url"]).split("?")[0].split("/_history/")[0].strip("/")
            if request.get("method") != "DELETE" or not RESOURCE_REF.fullmatch(url):
                raise ValueError(f"not a DELETE of Type/id: {url!r}")
            found.append(url)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable line of a deleted file: {exc}") from None
    return found
