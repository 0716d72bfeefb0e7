"""The decisions API's bodies: `DecisionCreate` in, `DecisionPublic` and
`DecisionHistoryPublic` out (the published contract, openapi/openapi.json)."""

from __future__ import annotations

import datetime as dt
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.worklist.model import Decision, DecisionState
from service.worklist.report import RecruitmentReport
from service.worklist.store import NOTE_MAX

__all__ = [
    "DecisionCreate",
    "DecisionHistoryPublic",
    "DecisionPublic",
    "RecruitmentReportPublic",
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
