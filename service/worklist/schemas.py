"""The decisions API's bodies: `DecisionCreate` in; `DecisionRecordedPublic` (the decision and
its write-back), `DecisionHistoryPublic` and `RecruitmentReportPublic` out (the published
contract, openapi/openapi.json)."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.worklist.model import Decision, DecisionState
from service.worklist.report import RecruitmentReport
from service.worklist.store import NOTE_MAX
from service.worklist.subjects import SubjectState

__all__ = [
    "DecisionCreate",
    "DecisionHistoryPublic",
    "DecisionPublic",
    "DecisionRecordedPublic",
    "RecruitmentReportPublic",
    "ResearchSubjectPublic",
    "WriteBackPublic",
]


class DecisionCreate(BaseModel):
    """A decision to record: its state and why; `criterion` with screen_failed (and only
    then), `until` with not_now (and only then). Who and when are the caller and the clock."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"state": "screen_failed", "criterion": "I6.hgb", "note": "Hb 55 g/L on repeat"},
                {"state": "not_now", "until": "2027-01-15", "note": "travelling until January"},
            ]
        },
    )

    state: DecisionState
    note: str | None = Field(None, max_length=NOTE_MAX, description="Why")
    criterion: str | None = Field(
        None, min_length=1, max_length=64, description="screen_failed: the criterion id failed"
    )
    until: dt.date | None = Field(None, description="not_now: the date the patient returns")

    @model_validator(mode="after")
    def _fields_of_the_state(self) -> Self:
        if (self.state == "screen_failed") != (self.criterion is not None):
            raise ValueError("criterion is required with screen_failed, and only with it")
        if (self.state == "not_now") != (self.until is not None):
            raise ValueError("until is required with not_now, and only with it")
        return self


class DecisionPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trial: str
    patient: str = Field(description='"Patient/<id>"')
    state: DecisionState
    note: str | None
    criterion: str | None
    until: dt.date | None
    by: str = Field(description="Who: the subject of the caller's token")
    at: dt.datetime = Field(description="When (UTC)")

    @classmethod
    def of(cls, decision: Decision) -> DecisionPublic:
        return cls(
            trial=decision.trial_id,
            patient=decision.patient,
            state=decision.state,
            note=decision.note,
            criterion=decision.criterion,
            until=decision.until,
            by=decision.subject,
            at=decision.at.astimezone(dt.UTC),
        )


class WriteBackPublic(BaseModel):
    """How the decision reached the patient's ResearchSubject on the FHIR server."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["written", "failed", "off"] = Field(
        description="written; failed (the decision is kept, the next sweep's write-back tries "
        "again); off (COHORT_MATCH_SWEEP_WRITE_BACK is not on)"
    )
    status: str = Field(description="The R4 ResearchSubject.status the decision maps to")
    resource: str = Field(description='"ResearchSubject/<id>", the same id every write uses')
    detail: str | None = Field(None, description="Why it failed")


class DecisionRecordedPublic(DecisionPublic):
    """A decision just recorded, and its write-back."""

    write_back: WriteBackPublic


class ResearchSubjectPublic(BaseModel):
    """What cohort-match knows of the patient's ResearchSubject for the trial."""

    model_config = ConfigDict(extra="forbid")

    resource: str = Field(description='"ResearchSubject/<id>"')
    status: str | None = Field(
        description="The status cohort-match last wrote, or read back from the EHR"
    )
    source: Literal["sweep", "decision", "ehr"] | None = Field(
        description="Who set that status: a sweep, a decision written back, the EHR"
    )
    at: dt.datetime | None = Field(description="When (UTC)")
    write_back: Literal["written", "failed", "off"] | None = Field(
        description="How the write-back of the latest decision written went"
    )
    detail: str | None = Field(description="Why it failed")

    @classmethod
    def of(cls, resource: str, state: SubjectState) -> ResearchSubjectPublic:
        return cls(
            resource=resource,
            status=state.status,
            source=state.source,
            at=state.status_at,
            write_back=state.outcome,
            detail=state.detail,
        )


class DecisionHistoryPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trial: str
    patient: str
    current: DecisionPublic | None = Field(description="The latest decision, if any")
    open: bool = Field(
        description="Whether the current decision holds the patient out of the new candidates "
        "today (false once a not_now date has come)"
    )
    decisions: list[DecisionPublic] = Field(description="Every decision, oldest first")
    research_subject: ResearchSubjectPublic | None = Field(
        None, description="The patient's ResearchSubject, when cohort-match wrote or read one"
    )


class RecruitmentReportPublic(BaseModel):
    """The recruitment report (service/worklist/report.py states how each count is made)."""

    model_config = ConfigDict(extra="forbid")

    trial: str
    start: dt.date = Field(description="The period's first day (inclusive)")
    end: dt.date = Field(description="The period's last day (inclusive)")
    sweep: int | None = Field(
        description="The latest sweep completed in the period, whose counts are the engine's"
    )
    screened: int = Field(description="Patients the engine screened (that sweep)")
    candidates: int = Field(description="Likely + possibly eligible (that sweep)")
    reviewed: int = Field(description="Patients with any decision in the period")
    to_review: int
    contacted: int
    consented: int
    declined: int
    screen_failed: int
    enrolled: int
    not_now: int
    screen_failed_by_reason: dict[str, int] = Field(
        description="The screen-failed patients by the criterion id of their decision"
    )

    @classmethod
    def of(cls, report: RecruitmentReport) -> RecruitmentReportPublic:
        return cls(
            trial=report.trial_id,
            start=report.start,
            end=report.end,
            sweep=report.sweep,
            screened=report.screened,
            candidates=report.candidates,
            reviewed=report.reviewed,
            screen_failed_by_reason=dict(report.screen_failed_by_reason),
            to_review=report.states["to_review"],
            contacted=report.states["contacted"],
            consented=report.states["consented"],
            declined=report.states["declined"],
            screen_failed=report.states["screen_failed"],
            enrolled=report.states["enrolled"],
            not_now=report.states["not_now"],
        )
