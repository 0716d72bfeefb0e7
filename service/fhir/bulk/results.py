"""What an export gives back (`ExportResult`, its files and issues), what the `progress`
callback receives, and how patiently to wait (`BulkPolicy`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from service.fhir.transport import RetryPolicy

__all__ = [
    "MAX_ISSUES_KEPT",
    "TRANSFER_RETRY",
    "BulkPolicy",
    "ExportFile",
    "ExportIssue",
    "ExportProgress",
    "ExportResult",
]

MAX_ISSUES_KEPT = 1000


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


# A kick-off or a download: waits up to a minute between tries (a Bulk server under load),
# and a Retry-After up to the longest poll wait.
TRANSFER_RETRY = RetryPolicy(
    attempts=4, base_delay_s=1.0, max_delay_s=60.0, max_retry_after_s=120.0
)


@dataclass(frozen=True)
class BulkPolicy:
    """How patiently to wait. Delays are in seconds.

    Polling (a job still running is no failure) has its own backoff below; the kick-off and
    the downloads are retried by the one retry helper (service/fhir/transport.py) with
    `retry`: patient, since giving up on one file throws a whole export away.
    """

    first_delay_s: float = 1.0  # polling backoff start when the server sends no Retry-After
    min_delay_s: float = 1.0  # a smaller (or zero, or past) Retry-After is raised to this
    max_delay_s: float = 120.0  # a larger one is capped: the poll limit bounds the total
    transient_retries: int = 3  # failures in a row tolerated on polling
    concurrency: int = 4  # files downloaded at once
    retry: RetryPolicy = TRANSFER_RETRY

    def delay(self, retry_after: float | None, attempt: int) -> float:
        if retry_after is not None:
            return min(max(retry_after, self.min_delay_s), self.max_delay_s)
        return min(
            max(self.first_delay_s * 2.0 ** max(attempt - 1, 0), self.min_delay_s), self.max_delay_s
        )
