"""GET /patients/{patient_id}/trials: one patient against every trial served, best fit first.

The patient is fetched once (service/all_trials.py: the union of the trials' fetch plans) and
every trial evaluated on the same record. Each row: the trial, the patient's status and score
for it, the rank key's parts, and the next step (ranking.next_step: why an ineligible patient
is out, else the cheapest open check). Same read scope and audit as /match: reading one
patient's fit is what /match does, for every trial at once.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.all_trials import screen_every_trial
from service.api.deps import Audit, audited, scoped
from service.api.match import ERRORS, _fhir, _fhir_token
from service.api.state import OffLoopJsonRoute, State
from service.as_of import AsOf
from service.candidates import patient_id as checked_patient_id
from service.criteria.verdict import Status
from service.errors import FhirNotFound, NotFound
from service.security import Principal

__all__ = ["PatientTrialsPublic", "TrialFitPublic", "router"]

router = APIRouter(tags=["screening"], route_class=OffLoopJsonRoute)


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


class TrialFitPublic(BaseModel):
    """How the patient fits one trial."""

    rank: int = Field(ge=1, description="1 = the best fit among the trials served")
    trial_id: str
    title: str
    version: str = Field(description="The trial file's version")
    status: Status
    score: float = Field(
        ge=0, le=1, description="Share of the automatic screening effort already settled"
    )
    fails: int = Field(ge=0, description="Failed criteria (the rank key after status and score)")
    next_step: str | None = Field(
        description=(
            "Ineligible: why (the failing criteria with value and date); otherwise the cheapest "
            "open check"
        )
    )


class PatientTrialsPublic(BaseModel):
    """One patient against every trial served, best fit first (status, score, fewer fails,
    then trial id)."""

    patient: str = Field(description='"Patient/<id>"')
    as_of: str = Field(description="The date screened as on (YYYY-MM-DD)")
    trials: list[TrialFitPublic]


@router.get(
    "/patients/{patient_id}/trials",
    summary="Screen one patient against every trial served",
    response_model=PatientTrialsPublic,
    responses=ERRORS,
    dependencies=[audited("patient-trials")],
)
async def patient_trials(
    patient_id: Annotated[
        str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    ],
    state: State,
    caller: Annotated[Principal, Depends(scoped("cohort-match/match.read"))],
    audit: Audit,
    as_of: Annotated[
        AsOf | None, Query(description="Screen as on this date (default today)")
    ] = None,
) -> Response:
    """Fetch the patient once from the FHIR server and evaluate every trial; the trials in
    the order a coordinator would look at them."""
    ident = checked_patient_id(patient_id)  # "." and ".." are not ids (400)
    reference = f"Patient/{ident}"
    audit.patients = [reference]
    day = as_of or state.today()
    token = _fhir_token(state, caller)
    try:
        every = await screen_every_trial(state, _fhir(state), ident, day, token)
    except FhirNotFound as exc:
        raise NotFound(f"{reference} not found on the FHIR server") from exc
    audit.outcome = ", ".join(f"{f.trial_id} {f.status}" for f in every.fits) or "no trials"
    return _json(
        {
            "patient": reference,
            "as_of": day,
            "trials": [
                {
                    "rank": f.rank,
                    "trial_id": f.trial_id,
                    "title": f.title,
                    "version": f.version,
                    "status": f.status,
                    "score": f.score,
                    "fails": f.fails,
                    "next_step": f.next_step,
                }
                for f in every.fits
            ],
        }
    )
