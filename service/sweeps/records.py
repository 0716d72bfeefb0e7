"""What the sweep store hands out and takes in: plain frozen records, no database.

RunSpec       a new run, as claimed
RunMode       how a run got its population, recorded with `completed`
RunInfo       a snapshot of one run's row (`run_info(row)` makes it)
ResultRow     one patient's result as stored, with its JSON
StoredResult  one patient's result without the JSON (diffs, funnels)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "COUNT_FIELDS",
    "FAILED",
    "RUNNING",
    "ResultRow",
    "RunInfo",
    "RunMode",
    "RunSpec",
    "RunStatus",
    "StoredResult",
    "run_info",
    "utc",
]

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
RunStatus = Literal["running", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class RunSpec:
    """What a new run is: set once, at claim."""

    trial_id: str
    trial_version: str
    terminology_version: str
    as_of: dt.date
    source_kind: Literal["files", "fhir"]
    source: str
    requested_by: str
    criteria: list[dict[str, str]]
    requested_mode: Literal["auto", "full"] = "auto"


@dataclass(frozen=True)
class RunMode:
    """How a run got its population, recorded with `completed`."""

    mode: Literal["files", "full", "incremental"]
    based_on: int | None = None  # the run whose snapshot an incremental run started from
    changes: dict[str, Any] | None = None  # what the delta held, and why a run went full


@dataclass(frozen=True)
class RunInfo:
    """A snapshot of one run's row."""

    id: int
    trial_id: str
    trial_version: str
    terminology_version: str
    as_of: dt.date
    source_kind: str
    source: str
    status: RunStatus
    requested_by: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    heartbeat_at: dt.datetime
    pid: int
    host: str
    cancel_requested: bool
    stage: str
    done: int
    total: int
    stored: int
    counts: dict[str, int]
    transaction_time: dt.datetime | None
    criteria: list[dict[str, str]]
    attrition: dict[str, Any] | None
    problems: list[str]
    error: str | None
    write_back: str | None
    results_purged: bool
    requested_mode: str | None = None
    mode: str | None = None
    based_on: int | None = None
    changes: dict[str, Any] | None = None

    @property
    def has_results(self) -> bool:
        return self.status == COMPLETED and not self.results_purged

    @property
    def criterion_ids(self) -> list[str]:
        return [c["id"] for c in self.criteria]


COUNT_FIELDS = (
    "patients",
    "likely_eligible",
    "possibly_eligible",
    "ineligible",
    "resources",
    "errors",
)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One patient's result as stored; `result` is the JSON bytes, with its rank."""

    patient: str
    rank: int
    status: str
    score: float
    fails: int
    unknowns: int
    verdicts: dict[str, str]
    result: bytes


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A stored result without the full JSON (diffs and funnels need no evidence)."""

    patient: str
    rank: int
    status: str
    score: float
    verdicts: dict[str, str] = field(default_factory=dict)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no offset: everything is written in UTC, so a naive value read back is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def run_info(row: Any) -> RunInfo:
    """The record of a `sweep_runs` row (any object with its columns as attributes)."""
    started, heartbeat = utc(row.started_at), utc(row.heartbeat_at)
    assert started is not None and heartbeat is not None
    return RunInfo(
        id=row.id,
        trial_id=row.trial_id,
        trial_version=row.trial_version,
        terminology_version=row.terminology_version,
        as_of=row.as_of,
        source_kind=row.source_kind,
        source=row.source,
        status=row.status,
        requested_by=row.requested_by,
        started_at=started,
        ended_at=utc(row.ended_at),
        heartbeat_at=heartbeat,
        pid=row.pid,
        host=row.host,
        cancel_requested=bool(row.cancel_requested),
        stage=row.stage,
        done=row.done,
        total=row.total,
        stored=row.stored,
        counts={name: getattr(row, name) for name in COUNT_FIELDS},
        transaction_time=utc(row.transaction_time),
        criteria=list(row.criteria or []),
        attrition=row.attrition,
        problems=list(row.problems or []),
        error=row.error,
        write_back=row.write_back,
        results_purged=bool(row.results_purged),
        requested_mode=row.requested_mode,
        mode=row.mode,
        based_on=row.based_on,
        changes=row.changes,
    )
