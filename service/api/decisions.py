"""The coordinator's decisions for a patient and a trial (service/worklist/).

    POST /trials/{trial_id}/patients/{patient_id}/decisions   record one (201)
    GET  /trials/{trial_id}/patients/{patient_id}/decisions   the history, oldest first

Scopes: `cohort-match/decisions.write` to record, `cohort-match/decisions.read` to read
(`cohort-match/*.read` grants reading, never writing). Every call is audited; a decision is
stored only once its call's audit row is in, so no decision is ever unaudited. Who is the
token's subject and when is the app clock: neither is taken from the body. Its `basis` is the
patient's result in the trial's latest completed sweep (what `returns_as_new` compares with).

Write-back (`record`): with COHORT_MATCH_SWEEP_WRITE_BACK on, a decision stored is then
written to the patient's ResearchSubject on the configured FHIR server, its status mapped by
the reviewed CSV (service/worklist/research_subject.py), as one transaction sent once
(service/sweeps/write_back.write_decision). The decision comes first: a write that fails
leaves it stored, `failed` is recorded (service/worklist/subjects.py) and answered, and the
next sweep's write-back writes it. The database work runs off the event loop, the FHIR call
on the async client. The pages record decisions through `new_decision` and `record` too
(service/api/pages.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import Audit, audited, scoped
from service.api.state import State
from service.app_state import AppState
from service.candidates import patient_id as fhir_patient_id
from service.criteria.model import TrialDefinition
from service.errors import FhirError, Unprocessable
from service.security import Principal
from service.sweeps.write_back import write_decision
from service.worklist.model import Decision, Screened, current, open_decision
from service.worklist.research_subject import subject_id
from service.worklist.schemas import (
    DecisionCreate,
    DecisionHistoryPublic,
    DecisionPublic,
    DecisionRecordedPublic,
    ResearchSubjectPublic,
    WriteBackPublic,
)
from service.worklist.subjects import Outcome

__all__ = ["READ", "WRITE", "basis", "new_decision", "record", "router"]

READ, WRITE = "cohort-match/decisions.read", "cohort-match/decisions.write"
PATH = "/trials/{trial_id}/patients/{patient_id}/decisions"

router = APIRouter(tags=["worklist"])
log = logging.getLogger(__name__)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/fhir+json": {}}}
    for code, text in {
        400: "Not a FHIR patient id (OperationOutcome)",
        401: "No or invalid bearer token",
        403: "Token lacks the scope",
        404: "Unknown trial",
        422: "Body does not match the schema, an unknown criterion, or a date not ahead",
        503: "The call could not be audited",
    }.items()
}
PatientId = Annotated[str, Path(description='The patient\'s FHIR id ("p01")')]


def basis(state: AppState, trial_id: str, reference: str) -> Screened | None:
    """The screen a decision is made on: the patient's result in the trial's latest completed
    sweep that kept its results (blocking), None when no sweep screened them or the store
    cannot be read (the decision then stands until a newer one: `returns_as_new`)."""
    try:
        found = state.sweeps.store.latest_result(trial_id, reference)
    except SQLAlchemyError:
        log.warning("decision basis: could not read the sweep store", exc_info=True)
        return None
    return None if found is None else Screened(found.status, found.verdicts)


async def new_decision(
    state: AppState,
    trial: TrialDefinition,
    reference: str,
    body: DecisionCreate,
    *,
    subject: str,
    client_id: str | None,
) -> Decision:
    """The decision `body` asks for, checked against the trial and the clock, with who, when
    and its `basis`: the one way the API and the pages make a decision. Unprocessable for a
    criterion the trial does not have or a not-now date not after today."""
    if body.criterion is not None and body.criterion not in {c.id for c in trial.criteria}:
        raise Unprocessable(f"criterion {body.criterion!r} is not a criterion of {trial.id}")
    if body.until is not None and body.until <= state.today():
        raise Unprocessable(f"until {body.until} is not after today ({state.today()})")
    return Decision(
        trial_id=trial.id,
        patient=reference,
        state=body.state,
        subject=subject,
        client_id=client_id,
        at=state.clock.now(),
        note=body.note,
        criterion=body.criterion,
        until=body.until,
        basis=await asyncio.to_thread(basis, state, trial.id, reference),
    )


async def _write_back(
    state: AppState, trial: TrialDefinition, decision: Decision
) -> WriteBackPublic:
    """The decision's status to the patient's ResearchSubject, when write-back is on."""
    status = state.statuses.written[decision.state]
    resource = f"ResearchSubject/{subject_id(trial.id, decision.patient)}"
    client = state.fhir.configured
    outcome: Outcome = "off"
    detail = None
    if state.settings.sweep_write_back and client is not None:
        try:
            await write_decision(client, trial.id, trial.title, decision.patient, status)
            outcome = "written"
        except FhirError as exc:
            outcome, detail = "failed", exc.message
            log.warning("decision write-back failed (%s); the next sweep retries it", exc.status)
        except Exception as exc:  # the decision is kept whatever went wrong with the write
            outcome, detail = "failed", type(exc).__name__
            log.exception("decision write-back failed; the next sweep retries it")
    assert decision.id is not None
    try:
        await asyncio.to_thread(
            state.subjects.outcome,
            trial.id,
            decision.patient,
            decision.id,
            outcome,
            state.clock.now(),
            status=status if outcome == "written" else None,
            detail=detail,
        )
    except SQLAlchemyError:  # the decision and the write stand; the next sweep compares again
        log.warning("decision write-back: its outcome could not be stored", exc_info=True)
    return WriteBackPublic(outcome=outcome, status=status, resource=resource, detail=detail)


async def record(
    state: AppState, trial: TrialDefinition, decision: Decision
) -> tuple[Decision, WriteBackPublic]:
    """Store `decision` (off the event loop), then write it back (module docstring): the one
    way the API and the pages record a decision, once the call's audit row is in."""
    stored = await asyncio.to_thread(state.decisions.record, decision)
    return stored, await _write_back(state, trial, stored)


@router.post(
    PATH,
    summary="Record a decision",
    status_code=201,
    response_model=DecisionRecordedPublic,
    responses=ERRORS,
    dependencies=[audited("decision")],
)
async def record_decision(
    trial_id: str,
    patient_id: PatientId,
    state: State,
    caller: Annotated[Principal, Depends(scoped(WRITE))],
    audit: Audit,
    body: DecisionCreate,
) -> DecisionRecordedPublic:
    """Record what the coordinator did with the patient for this trial. The history is kept:
    a new decision supersedes the current one, nothing is overwritten. With write-back on,
    the patient's ResearchSubject gets the decision's status; `write_back` says how that
    went (a failed write keeps the decision, and the next sweep writes it)."""
    trial = state.trial(trial_id)
    reference = f"Patient/{fhir_patient_id(patient_id)}"
    audit.patients = [reference]
    decision = await new_decision(
        state, trial, reference, body, subject=caller.subject, client_id=caller.client_id
    )
    audit.outcome = f"recorded {body.state}"
    await audit.write_now()  # a call whose audit fails stores nothing
    stored, write_back = await record(state, trial, decision)
    return DecisionRecordedPublic(**DecisionPublic.of(stored).model_dump(), write_back=write_back)


@router.get(
    PATH,
    summary="A patient's decisions for a trial",
    response_model=DecisionHistoryPublic,
    responses=ERRORS,
    dependencies=[audited("decisions")],
)
async def decision_history(
    trial_id: str,
    patient_id: PatientId,
    state: State,
    _caller: Annotated[Principal, Depends(scoped(READ))],
    audit: Audit,
) -> DecisionHistoryPublic:
    """Every decision recorded for the patient and trial, oldest first, and the current one."""
    state.trial(trial_id)
    reference = f"Patient/{fhir_patient_id(patient_id)}"
    audit.patients = [reference]
    history = await asyncio.to_thread(state.decisions.history, trial_id, reference)
    subject = await asyncio.to_thread(state.subjects.get, trial_id, reference)
    latest = current(history)
    audit.outcome = f"{len(history)} decisions"
    resource = f"ResearchSubject/{subject_id(trial_id, reference)}"
    return DecisionHistoryPublic(
        trial=trial_id,
        patient=reference,
        current=DecisionPublic.of(latest) if latest else None,
        open=open_decision(history, state.today()) is not None,
        decisions=[DecisionPublic.of(d) for d in history],
        research_subject=ResearchSubjectPublic.of(resource, subject) if subject else None,
    )
