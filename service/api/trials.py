"""GET /trials and /trials/{trial_id}: the trials served and their criteria."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import Caller
from service.api.state import State
from service.errors import NotFound

router = APIRouter(tags=["trials"])


class CriterionPublic(BaseModel):
    id: str
    kind: str
    number: int
    text: str
    assessment: str
    check: str
    note: str | None = None


class TrialPublic(BaseModel):
    id: str
    version: str
    title: str
    criteria: list[CriterionPublic]


class TrialSummaryPublic(BaseModel):
    id: str
    version: str
    title: str
    criteria: int


@router.get("/trials", response_model=list[TrialSummaryPublic])
def list_trials(state: State, caller: Caller) -> list[TrialSummaryPublic]:
    return [
        TrialSummaryPublic(id=t.id, version=t.version, title=t.title, criteria=len(t.criteria))
        for t in state.trials.values()
    ]


@router.get(
    "/trials/{trial_id}",
    response_model=TrialPublic,
    responses={404: {"description": "Unknown trial"}},
)
def get_trial(trial_id: str, state: State, caller: Caller) -> TrialPublic:
    trial = state.trials.get(trial_id)
    if trial is None:
        raise NotFound(f"unknown trial {trial_id!r}")
    return TrialPublic(
        id=trial.id,
        version=trial.version,
        title=trial.title,
        criteria=[
            CriterionPublic(
                id=c.id,
                kind=c.kind,
                number=c.number,
                text=c.text,
                assessment=c.assessment,
                check=c.check,
                note=c.note,
            )
            for c in trial.criteria
        ],
    )
