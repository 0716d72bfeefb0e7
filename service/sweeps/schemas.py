"""What sweeps publish (API responses and `--format json` of the CLI), as pydantic models.

The ranked candidates of a run are the existing contract (`RankedListPublic`,
service/schemas.py); these models add the run itself, its funnel and its diff.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.as_of import AsOf
from service.schemas import TrialRefPublic
from service.worklist.model import DecisionState

__all__ = [
    "AttritionPublic",
    "CriterionChangePublic",
    "DiffPublic",
    "FetchPublic",
    "FunnelStepPublic",
    "PatientChangePublic",
    "RunRefPublic",
    "SweepCreate",
    "SweepListPublic",
    "SweepPublic",
    "VerdictCountsPublic",
]

Status = Literal["likely_eligible", "possibly_eligible", "ineligible"]
Verdict = Literal["pass", "fail", "unknown", "not_applicable"]
RunStatus = Literal["running", "completed", "failed", "cancelled"]


class _Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepCreate(_Public):
    """Start a sweep of one trial over the configured source (files or the FHIR server)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"trial": "NCT06946485", "as_of": "2026-11-20"}]},
    )

    trial: str = Field(min_length=1, max_length=64)
    as_of: AsOf | None = Field(
        None, description="Evaluate as on this date (1900-01-01 to 2200-12-31); default today"
    )
    full: bool = Field(
        False,
        description="From a FHIR server: export everything, even where the previous run's "
        "snapshot would allow an incremental run (only what changed since)",
    )


class SourcePublic(_Public):
    kind: Literal["files", "fhir"]
    location: str = Field(description="Directory screened, or the FHIR base URL exported")


class ProgressPublic(_Public):
    stage: str = Field(description="queued, export, read, evaluate, store or done")
    done: int
    total: int


class RunCountsPublic(_Public):
    patients: int
    likely_eligible: int
    possibly_eligible: int
    ineligible: int
    resources: int
    errors: int = Field(description="Records that could not be read (named under problems)")


class FetchPublic(_Public):
    """How a run got its population, and from a FHIR server what the export held."""

    mode: Literal["files", "full", "incremental"] | None = Field(
        None, description="None while running, and for runs stored before version 0002"
    )
    requested: Literal["auto", "full"] | None = None
    based_on: int | None = Field(
        None, description="incremental: the run whose snapshot it started from"
    )
    since: dt.datetime | None = Field(
        None, description="incremental: the _since sent (that run's transactionTime)"
    )
    reason: str | None = Field(None, description="full: why not incremental")
    read: int | None = Field(None, description="Resources the export (or delta) returned")
    kept: int | None = Field(None, description="Of those, resources the trial reads")
    carried: int | None = Field(None, description="incremental: unchanged, from the snapshot")
    replaced: int | None = Field(None, description="incremental: previous versions replaced")
    deleted: int | None = Field(None, description="incremental: removed as deleted")
    patients: int | None = Field(None, description="incremental: patients with changed records")


class WorkerPublic(_Public):
    host: str
    pid: int
    heartbeat_at: dt.datetime


class SweepPublic(_Public):
    """One run: what, from where, by whom, how far, and how it ended."""

    id: int
    trial: TrialRefPublic
    as_of: dt.date
    source: SourcePublic
    status: RunStatus
    requested_by: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    progress: ProgressPublic
    counts: RunCountsPublic = Field(description="Set when the run completes")
    worker: WorkerPublic
    fetch: FetchPublic
    transaction_time: dt.datetime | None = Field(
        None, description="Bulk export transactionTime: the _since of an incremental run"
    )
    error: str | None = None
    problems: list[str] = Field(default_factory=list, description="Unreadable records, named")
    write_back: str | None = Field(None, description="Outcome of the write-back to the server")
    results_available: bool


class SweepListPublic(_Public):
    runs: list[SweepPublic]


class VerdictCountsPublic(_Public):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pass_: int = Field(alias="pass")
    fail: int
    unknown: int
    not_applicable: int


class FunnelStepPublic(_Public):
    """One criterion of the funnel, in protocol order (ATLAS-style inclusion report)."""

    id: str
    kind: Literal["inclusion", "exclusion"]
    assessment: Literal["automatic", "manual"]
    text: str
    verdicts: VerdictCountsPublic = Field(description="Over every patient of the run")
    remaining_before: int = Field(description="Patients with no fail in the criteria before")
    dropped: int = Field(description="Of those, patients who fail this criterion")
    remaining_after: int
    unknown: int = Field(description="Of remaining_before, patients this criterion leaves unknown")
    unknown_share: float = Field(ge=0, le=1, description="unknown / remaining_before")


class AttritionPublic(_Public):
    run: int
    trial: TrialRefPublic
    as_of: dt.date
    patients: int
    steps: list[FunnelStepPublic]
    remaining: int = Field(description="Patients with no fail: likely + possibly eligible")
    likely_eligible: int
    possibly_eligible: int
    excluded: int = Field(
        0,
        description="Patients who are no candidate whatever the criteria say (deceased on or "
        "before as_of): they enter no step",
    )


class RunRefPublic(_Public):
    id: int
    as_of: dt.date
    trial_version: str
    terminology: str
    ended_at: dt.datetime | None


class CriterionChangePublic(_Public):
    id: str
    before: Verdict
    after: Verdict


class PatientChangePublic(_Public):
    patient: str
    change: Literal["new", "dropped", "status", "verdicts", "arrived", "left", "decided"]
    before: Status | None = Field(description="null: not in the earlier run")
    after: Status | None = Field(description="null: not in the later run")
    rank_before: int | None
    rank_after: int | None
    criteria: list[CriterionChangePublic] = Field(description="Criteria whose verdict changed")
    decision: DecisionState | None = Field(
        None,
        description="The coordinator's current decision for the patient (under `new`: the "
        "decision the patient comes back from)",
    )


class DiffPublic(_Public):
    """What changed from run `against` (earlier) to run `run` (later).

    new: a candidate (likely or possibly eligible) now, not before (ineligible or absent);
    dropped: a candidate before, not now; status: a candidate in both, status changed;
    verdicts: same status, but some criterion's verdict changed; arrived: new to the
    population and not a candidate; left: gone from the population, not a candidate before.
    A patient new to the population is never "unchanged".

    With the coordinator's decisions (service/worklist/): decided: would be new, but has an
    open decision (to review, contacted, enrolled, ...), so is kept apart from the new
    candidates; a declined or screen-failed patient whose record changed in their favour, or a
    not-now patient whose date came, is under `new` again, whatever else changed.
    """

    trial: str
    run: RunRefPublic
    against: RunRefPublic
    notes: list[str] = Field(default_factory=list)
    new: list[PatientChangePublic]
    dropped: list[PatientChangePublic]
    status: list[PatientChangePublic]
    verdicts: list[PatientChangePublic]
    arrived: list[PatientChangePublic] = Field(default_factory=list)
    left: list[PatientChangePublic] = Field(default_factory=list)
    decided: list[PatientChangePublic] = Field(default_factory=list)
    counts: dict[str, int]
