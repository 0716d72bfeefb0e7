"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/): discovery, a `patient-view` service per
trial, and feedback.

    GET  /cds-services                      the services, with their prefetch templates
    POST /cds-services/{id}                 screen the patient in view -> a card, or none
    POST /cds-services/{id}/feedback        what the user did with a card

The router parses, authenticates, audits and renders; what a call does (prefetch, which
`fhirServer` may be called, the time budget, the card) is the runtime's, service/cds/runtime.py.

- A body that does not match the specification is 400 with the field named (an
  OperationOutcome, like every error of this API), not FastAPI's 422.
- Every hook and feedback call writes an audit row (`cds-hook`, `cds-feedback`): the EHR user
  (`context.userId`, as the client states it), the client (JWT `iss`), the patient, the trial,
  and the outcome (status and whether a card was returned), never clinical values. A card
  issued or feedback received is stored only once that row is in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from service.api.deps import Audit, audited
from service.api.state import OffLoopJsonRoute, State
from service.cds.auth import CdsClient
from service.cds.models import (
    CdsFeedbackRequest,
    CdsResponsePublic,
    CdsServicesPublic,
    FeedbackStoredPublic,
    HookRequest,
)
from service.cds.runtime import ALL_TRIALS, ALL_TRIALS_SERVICE, service_id_for
from service.errors import BadRequest
from service.security import ANONYMOUS

__all__ = ["router", "service_id_for"]

_ERROR_TEXT: dict[int | str, str] = {
    400: "The body is not a valid CDS Hooks request (OperationOutcome names the field)",
    401: "No or invalid CDS client JWT",
    404: "Unknown service",
    412: "Data the service needs was neither prefetched nor obtainable from the FHIR server",
    # Also keeps FastAPI from documenting a 422: malformed bodies are 400 here.
    "4XX": "Other client errors, e.g. 413 for a body over COHORT_MATCH_MAX_BODY_BYTES",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/fhir+json": {}}}
    for code, text in _ERROR_TEXT.items()
}


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid CDS Hooks request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


class CdsRoute(OffLoopJsonRoute):
    """Notes when the request arrived (the time budget counts from then) and answers a body
    that does not match the specification with 400 (CDS clients expect 4xx client errors,
    not 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            request.state.arrived = time.monotonic()
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise BadRequest(_validation_message(exc)) from exc

        return route


router = APIRouter(tags=["cds-hooks"], route_class=CdsRoute)


def _authorization(request: Request) -> str:
    return request.headers.get("Authorization", "")


def _discovery_client(request: Request, state: State) -> CdsClient | None:
    return state.cds.authenticate(_authorization(request), "/cds-services")


def _audited_client(audit: Audit, client: CdsClient | None) -> CdsClient | None:
    audit.client_id = client.issuer if client else None
    audit.subject = client.issuer if client else ANONYMOUS.subject  # the user, once read
    return client


def _service_client(
    service_id: str, request: Request, state: State, audit: Audit
) -> CdsClient | None:
    path = f"/cds-services/{service_id}"
    return _audited_client(audit, state.cds.authenticate(_authorization(request), path))


def _feedback_client(
    service_id: str, request: Request, state: State, audit: Audit
) -> CdsClient | None:
    # The feedback URL is the endpoint called; the service's own URL is accepted as well,
    # as clients read "the CDS Service endpoint" either way.
    path = f"/cds-services/{service_id}"
    client = state.cds.authenticate(_authorization(request), f"{path}/feedback", path)
    return _audited_client(audit, client)


def _json(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


@router.get(
    "/cds-services",
    summary="CDS Hooks discovery",
    response_model=CdsServicesPublic,
    response_model_exclude_none=True,
    responses={401: ERRORS[401]},
)
async def discovery(
    state: State,
    _client: Annotated[CdsClient | None, Depends(_discovery_client)],
) -> Response:
    """One `patient-view` service per trial served, with its prefetch templates."""
    return _json(state.cds.discovery().model_dump(mode="json", exclude_none=True))


@router.post(
    "/cds-services/{service_id}",
    summary="Screen the patient in view (patient-view)",
    response_model=CdsResponsePublic,
    response_model_exclude_none=True,
    responses=ERRORS,
    dependencies=[audited("cds-hook")],
)
async def call_service(
    service_id: str,
    request: Request,
    state: State,
    audit: Audit,
    _client: Annotated[CdsClient | None, Depends(_service_client)],
    payload: HookRequest,
) -> Response:
    """Screen the patient in context; a card for a likely or possibly eligible patient, none
    for an ineligible one."""
    audit.subject = payload.context.userId
    if service_id == ALL_TRIALS_SERVICE:  # every trial, one card (service/cds/all_trials.py)
        audit.trial_id = ALL_TRIALS
        audit.patients = [f"Patient/{payload.context.patientId}"]
        answer = await state.cds.call_all(payload, request.state.arrived)
    else:
        trial = state.cds.trial(service_id)
        audit.trial_id = trial.id
        audit.patients = [f"Patient/{payload.context.patientId}"]
        answer = await state.cds.call(service_id, trial, payload, request.state.arrived)
    audit.outcome = answer.outcome
    if answer.issued is not None:
        audit.then(partial(state.cds.store.card_issued, answer.issued))
    timing = {"Server-Timing": answer.server_timing} if answer.server_timing else None
    body = CdsResponsePublic(cards=answer.cards).model_dump(mode="json", exclude_none=True)
    return _json(body, timing)


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback on a card",
    response_model=FeedbackStoredPublic,
    responses={k: v for k, v in ERRORS.items() if k != 412},
    dependencies=[audited("cds-feedback")],
)
async def feedback(
    service_id: str,
    state: State,
    audit: Audit,
    client: Annotated[CdsClient | None, Depends(_feedback_client)],
    payload: CdsFeedbackRequest,
) -> Response:
    """Store what the user did with cards (accepted / overridden, with the reason)."""
    runtime = state.cds
    all_trials = service_id == ALL_TRIALS_SERVICE
    audit.trial_id = ALL_TRIALS if all_trials else runtime.trial(service_id).id
    items = payload.feedback
    audit.patients = await asyncio.to_thread(runtime.store.patients_of, [i.card for i in items])
    audit.then(
        partial(runtime.store.add_feedback, service_id, client.issuer if client else None, items)
    )
    audit.outcome = f"{len(items)} stored"
    return _json(FeedbackStoredPublic(stored=len(items)).model_dump())
