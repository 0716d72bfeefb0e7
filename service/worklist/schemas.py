"""The decisions API's bodies: `DecisionCreate` in, `DecisionPublic` and
`DecisionHistoryPublic` out (the published contract, openapi/openapi.json)."""

from __future__ import annotations

import datetime as dt
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.worklist.model import Decision, DecisionState
from service.worklist.store import NOTE_MAX

__all__ = ["DecisionCreate", "DecisionHistoryPublic", "DecisionPublic"]


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
