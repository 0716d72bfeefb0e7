"""Reading what a FHIR server says besides the resource: Retry-After, HTTP dates,
OperationOutcome issues, and the error a status stands for. Shared by the search client and
the Bulk Data exporter."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from service.errors import (
    FhirAuthError,
    FhirError,
    FhirFatalError,
    FhirNotFound,
    FhirTemporaryError,
)

__all__ = [
    "TRANSIENT_STATUSES",
    "answer_text",
    "http_date",
    "issues_of",
    "operation_outcome",
    "outcome_text",
    "retry_after_s",
    "status_error",
    "without_query",
]

# Worth asking again after a while (with Retry-After when the server sends one).
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


def http_date(value: str | None) -> datetime | None:
    """An HTTP date (RFC 9110, always GMT) as an aware datetime; None if absent or unreadable."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date.

    An unreadable value is treated as absent (the caller's own backoff applies).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    moment = http_date(text)
    if moment is None:
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def operation_outcome(response: httpx.Response) -> dict[str, Any] | None:
    """The response body if it is an OperationOutcome."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return body
    return None


def issues_of(outcome: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(severity, code, text) of each issue."""
    found = []
    for issue in (outcome or {}).get("issue") or ():
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = issue.get("diagnostics") or (
            details.get("text") if isinstance(details, dict) else None
        )
        found.append(
            (
                str(issue.get("severity", "error")),
                str(issue.get("code", "unknown")),
                str(text or ""),
            )
        )
    return found


def outcome_text(outcome: dict[str, Any] | None) -> str:
    """The issues' diagnostics (or codes), joined: "" when there is nothing to say."""
    return "; ".join(text or code for _, code, text in issues_of(outcome))


def answer_text(response: httpx.Response, limit: int = 300) -> str:
    """What an error answer says: its OperationOutcome's text, else the start of its body."""
    return outcome_text(operation_outcome(response)) or response.text[:limit].strip()


def status_error(
    status: int, outcome: dict[str, Any] | None, url: str, said: str = ""
) -> FhirError:
    """The error a non-2xx answer stands for, whether to a request or to a batch entry.
    `said` is what the server said when it is not in `outcome` (a plain-text body)."""
    detail = outcome_text(outcome) or said
    suffix = f": {detail}" if detail else ""
    error: FhirError
    if status in (401, 403):
        error = FhirAuthError(
            f"FHIR server refused access ({status}) to {url}{suffix}",
            url=url,
            http_status=status,
            outcome=outcome,
        )
    elif status in (404, 410):
        error = FhirNotFound(
            f"not found ({status}): {url}{suffix}", url=url, http_status=status, outcome=outcome
        )
    else:
        kind = FhirTemporaryError if status in TRANSIENT_STATUSES else FhirFatalError
        error = kind(
            f"FHIR server answered {status} for {url}{suffix}",
            url=url,
            http_status=status,
            outcome=outcome,
        )
    error.detail = detail
    return error


def without_query(message: str, url: str | None) -> str:
    """A message quoting `url` with the URL cut to its path: a search's query holds up to 60
    codes (kilobytes) and, for some servers, identifiers that do not belong in logs."""
    if url and "?" in url:
        return message.replace(url, url.split("?", 1)[0] + "?...")
    return message
