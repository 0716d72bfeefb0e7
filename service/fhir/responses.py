"""Reading what a FHIR server says besides the resource: Retry-After, HTTP dates and
OperationOutcome issues. Shared by the search client and the Bulk Data exporter."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

__all__ = ["http_date", "issues_of", "operation_outcome", "outcome_text", "retry_after_s"]


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
