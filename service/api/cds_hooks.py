"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/): discovery, a `patient-view` service per
trial, and feedback.

    GET  /cds-services                      the services, with their prefetch templates
    POST /cds-services/{id}                 screen the patient in view -> a card, or none
    POST /cds-services/{id}/feedback        what the user did with a card

Design decisions (see also service/cds/):

- Prefetch: a key left out is searched on the FHIR server; `null` means "no data" as the
  specification says (`COHORT_MATCH_CDS_NULL_PREFETCH=refetch` for clients that disagree);
  an incomplete Bundle (next link) is searched again. Needed data that cannot be had at all
  is 412 Precondition Failed, the specification's answer.
- `fhirServer` is only called when it is `COHORT_MATCH_FHIR_BASE_URL` or listed in
  `COHORT_MATCH_CDS_FHIR_SERVERS` (else 400, before anything is sent): a hook call must not make
  this service send requests, or tokens, to a host of the caller's choosing. With
  `fhirAuthorization` its access token is used (scoped to the EHR user, as the specification
  intends), on a client of its own for the request so that nothing read with one user's
  token is cached for another; without it, the configured server's own credentials.
- Time budget (`COHORT_MATCH_CDS_TIME_BUDGET_S`, default 4 s, counted from the request's
  arrival): when the FHIR searches have not finished by then they are abandoned and the answer
  is `{"cards": []}` - what the EHR shows anyway when a service answers late - and the audit
  row says `timeout`. A search that fails within the budget makes its criteria `unknown`.
- Auth: every call (discovery and feedback too) carries the CDS client's signed JWT
  (service/cds/auth.py), with `aud` the URL called under `COHORT_MATCH_CDS_PUBLIC_BASE_URL`.
  `COHORT_MATCH_AUTH_DISABLED` (loopback only) turns it off with the rest of the API's auth.
- A body that does not match the specification is 400 with the field named (an
  OperationOutcome, like every error of this API), not FastAPI's 422.
- Every hook and feedback call writes an audit row (`cds-hook`, `cds-feedback`): the EHR user
  (`context.userId`, as the client states it), the client (JWT `iss`), the patient, the trial,
  and the outcome (status and whether a card was returned), never clinical values.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from service.api.match import check_entries
from service.api.state import AppState, OffLoopJsonRoute, State
from service.audit import AuditRecord
from service.cds.auth import CdsClient, CdsClientValidator
from service.cds.cards import card_for
from service.cds.models import (
    AS_OF_EXTENSION,
    CdsFeedbackRequest,
    CdsResponsePublic,
    CdsServicePublic,
    CdsServicesPublic,
    FeedbackStoredPublic,
    HookRequest,
)
from service.cds.prefetch import (
    Gathered,
    PrefetchQuery,
    gather,
    prefetch_queries,
    read_prefetch,
)
from service.cds.store import CdsStore, IssuedCard
from service.clock import today
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.errors import BadRequest, NotFound, ServiceError, Unauthorized
from service.fhir import FhirClient
from service.security import ANONYMOUS

__all__ = ["router", "service_id_for"]

log = logging.getLogger(__name__)
HOOK = "patient-view"
AUDITED = {"call_service": "cds-hook", "feedback": "cds-feedback"}
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


def service_id_for(trial_id: str) -> str:
    return f"cohort-match-{trial_id.lower()}"


# ---------------------------------------------------------------------------- audit + 400s
@dataclass
class _Call:
    """What the audit row of one call says; filled in as the call proceeds."""

    action: str | None
    started: float = field(default_factory=time.monotonic)
    subject: str = "unauthenticated"
    client_id: str | None = None
    trial_id: str | None = None
    patients: list[str] = field(default_factory=list)
    outcome: str = "error"
    # Writes the call makes once its audit row is in (a card issued, feedback): a call that
    # fails, its audit included, stores nothing.
    writes: list[Callable[[], None]] = field(default_factory=list)


def _call(request: Request) -> _Call:
    call: _Call = request.state.cds_call
    return call


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid CDS Hooks request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


class CdsRoute(OffLoopJsonRoute):
    """Audits hook and feedback calls whatever their outcome, and answers a body that does not
    match the specification with 400 (CDS clients expect 4xx client errors, not 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = AUDITED.get(self.name)

        async def route(request: Request) -> Response:
            call = _Call(action)
            request.state.cds_call = call
            try:
                response = await handler(request)
            except RequestValidationError as exc:
                call.outcome = "error 400"
                raise BadRequest(_validation_message(exc)) from exc
            except ServiceError as exc:
                call.outcome = f"error {exc.status}"
                raise
            finally:
                if action is not None:
                    state: AppState = request.app.state.cohort
                    await state.audit.arecord(
                        AuditRecord(
                            str(getattr(request.state, "request_id", "-")),
                            call.subject,
                            call.client_id,
                            action,
                            call.trial_id,
                            call.patients,
                            call.outcome,
                        )
                    )
            # Only reached when the handler answered and its audit row was written.
            for write in call.writes:
                await asyncio.to_thread(write)
            return response

        return route


router = APIRouter(tags=["cds-hooks"], route_class=CdsRoute)


# ---------------------------------------------------------------------------- runtime
def _normal(url: str) -> str:
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class FhirTarget:
    """Where missing data is searched, and with which token (None: the client's own auth)."""

    base_url: str
    token: str | None
    shared: FhirClient | None  # the service's pooled client, for its own server and credentials


@dataclass
class CdsRuntime:
    """Built once per application state, on first use."""

    state: AppState
    services: dict[str, TrialDefinition]  # service id -> trial
    queries: dict[str, list[PrefetchQuery]]  # trial id -> its prefetch keys
    validator: CdsClientValidator | None
    store: CdsStore
    fhir_servers: frozenset[str]  # fhirServer values that may be called

    @classmethod
    def build(cls, state: AppState) -> CdsRuntime:
        settings = state.settings
        validator = None
        if settings.cds_jwks_file is not None:
            issuers = frozenset(
                i.strip() for i in settings.cds_client_issuers.split(",") if i.strip()
            )
            validator = CdsClientValidator.from_jwks_file(settings.cds_jwks_file, issuers=issuers)
        servers = {_normal(s) for s in settings.cds_fhir_servers.split(",") if s.strip()}
        if settings.fhir_base_url:
            servers.add(_normal(settings.fhir_base_url))
        return cls(
            state=state,
            services={service_id_for(t.id): t for t in state.trials.values()},
            queries={t: prefetch_queries(plan) for t, plan in state.plans.items()},
            validator=validator,
            store=CdsStore(state.audit.engine),
            fhir_servers=frozenset(servers),
        )

    @property
    def launch_url(self) -> str | None:
        settings = self.state.settings
        if settings.cds_smart_launch_url:
            return settings.cds_smart_launch_url
        if settings.cds_public_base_url:
            return f"{_normal(settings.cds_public_base_url)}/launch"
        return None

    def trial(self, service_id: str) -> TrialDefinition:
        trial = self.services.get(service_id)
        if trial is None:
            raise NotFound(f"unknown CDS service {service_id!r}")
        return trial

    def authenticate(self, request: Request, path: str, *extra: str) -> CdsClient | None:
        """The CDS client's JWT, for `aud` {public base URL}{path}; None with auth disabled."""
        settings = self.state.settings
        if settings.auth_disabled:  # loopback only, enforced by Settings
            return None
        if self.validator is None or not settings.cds_public_base_url:
            raise Unauthorized(
                "CDS Hooks clients are not configured (COHORT_MATCH_CDS_JWKS_FILE, "
                "COHORT_MATCH_CDS_PUBLIC_BASE_URL)"
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a CDS client JWT is required (Authorization: Bearer <JWT>)")
        base = _normal(settings.cds_public_base_url)
        return self.validator.validate(token.strip(), [base + p for p in (path, *extra)])

    def fhir_target(self, payload: HookRequest) -> FhirTarget | None:
        """Where to search what was not prefetched; BadRequest for a fhirServer not allowed."""
        own = self.state.fhir
        token = payload.fhirAuthorization.access_token if payload.fhirAuthorization else None
        if payload.fhirServer is None:
            return FhirTarget(own.base_url, None, own) if own is not None else None
        wanted = _normal(payload.fhirServer)
        if wanted not in self.fhir_servers:
            raise BadRequest(
                f"fhirServer {payload.fhirServer!r} is not a FHIR server this service may call "
                "(COHORT_MATCH_FHIR_BASE_URL, COHORT_MATCH_CDS_FHIR_SERVERS)"
            )
        configured = self.state.settings.fhir_base_url
        if token is None and own is not None and configured and wanted == _normal(configured):
            return FhirTarget(wanted, None, own)
        return FhirTarget(wanted, token, None)


def _runtime(request: Request, state: AppState) -> CdsRuntime:
    runtime: CdsRuntime | None = getattr(request.app.state, "cds_hooks", None)
    if runtime is None or runtime.state is not state:
        runtime = CdsRuntime.build(state)
        request.app.state.cds_hooks = runtime
    return runtime


def _discovery_client(request: Request, state: State) -> CdsClient | None:
    return _runtime(request, state).authenticate(request, "/cds-services")


def _service_client(service_id: str, request: Request, state: State) -> CdsClient | None:
    client = _runtime(request, state).authenticate(request, f"/cds-services/{service_id}")
    call = _call(request)
    call.client_id = client.issuer if client else None
    call.subject = client.issuer if client else ANONYMOUS.subject  # the user, once read
    return client


def _feedback_client(service_id: str, request: Request, state: State) -> CdsClient | None:
    # The feedback URL is the endpoint called; the service's own URL is accepted as well,
    # as clients read "the CDS Service endpoint" either way.
    path = f"/cds-services/{service_id}"
    client = _runtime(request, state).authenticate(request, f"{path}/feedback", path)
    call = _call(request)
    call.client_id = client.issuer if client else None
    call.subject = client.issuer if client else ANONYMOUS.subject
    return client


def _json(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


# ---------------------------------------------------------------------------- endpoints
def _description(trial: TrialDefinition) -> str:
    return (
        f"Screens the patient in view against clinical trial {trial.id} ({trial.title}) and "
        "returns one card when the record does not rule the patient out: likely eligible "
        "(every automatic criterion met) or possibly eligible (some unknown), with what is left "
        "to check and a SMART link to the full result. No card for an ineligible patient. "
        f'Request extension "{AS_OF_EXTENSION}": "YYYY-MM-DD" screens as on that date '
        "(default: today)."
    )


@router.get(
    "/cds-services",
    summary="CDS Hooks discovery",
    response_model=CdsServicesPublic,
    response_model_exclude_none=True,
    responses={401: ERRORS[401]},
)
async def discovery(
    request: Request,
    state: State,
    _client: Annotated[CdsClient | None, Depends(_discovery_client)],
) -> Response:
    """One `patient-view` service per trial served, with its prefetch templates."""
    runtime = _runtime(request, state)
    services = [
        CdsServicePublic(
            hook=HOOK,
            title=f"Clinical trial screening: {trial.id}",
            description=_description(trial),
            id=service_id,
            prefetch={q.key: q.template() for q in runtime.queries[trial.id]},
            extension={"org.cohort-match.trial": {"id": trial.id, "version": trial.version}},
        )
        for service_id, trial in sorted(runtime.services.items())
    ]
    return _json(CdsServicesPublic(services=services).model_dump(mode="json", exclude_none=True))


@router.post(
    "/cds-services/{service_id}",
    summary="Screen the patient in view (patient-view)",
    response_model=CdsResponsePublic,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def call_service(
    service_id: str,
    request: Request,
    state: State,
    _client: Annotated[CdsClient | None, Depends(_service_client)],
    payload: HookRequest,
) -> Response:
    """Screen the patient in context; a card for a likely or possibly eligible patient, none
    for an ineligible one."""
    call = _call(request)
    runtime = _runtime(request, state)
    trial = runtime.trial(service_id)
    settings = state.settings
    patient_id = payload.context.patientId
    call.trial_id = trial.id
    call.subject = payload.context.userId
    call.patients = [f"Patient/{patient_id}"]
    if payload.hook != HOOK:
        raise BadRequest(f"service {service_id} answers the {HOOK} hook, not {payload.hook!r}")
    try:
        day = payload.as_of() or today(state.settings)
    except ValueError as exc:
        raise BadRequest(f"extension.{AS_OF_EXTENSION}: {exc}") from exc
    queries = runtime.queries[trial.id]
    readings = read_prefetch(queries, payload.prefetch, patient_id, settings.cds_null_prefetch)
    check_entries(
        sum(len(r or ()) for r in readings.values()), settings.max_bundle_entries, "the prefetch"
    )
    target = runtime.fhir_target(payload)
    remaining = settings.cds_time_budget_s - (time.monotonic() - call.started)
    fetch_started = time.perf_counter()
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            wanted = state.plans[trial.id].valuesets
            gathered = await _gather(queries, readings, patient_id, state, target, wanted)
    except TimeoutError:
        log.warning(
            "cds %s Patient/%s: FHIR searches exceeded the %.1f s budget; no card",
            service_id,
            patient_id,
            settings.cds_time_budget_s,
        )
        call.outcome = "timeout: no card"
        return _json({"cards": []})
    fetch_s = time.perf_counter() - fetch_started
    started = time.perf_counter()
    result = await state.off_loop(
        partial(evaluate, mrn_type=state.settings.mrn_type), trial, gathered.facts, day, state.terms
    )
    card = card_for(result, trial, card_id=str(uuid.uuid4()), launch_url=runtime.launch_url)
    engine_s = time.perf_counter() - started
    log.info(
        "cds %s Patient/%s: %d keys prefetched, %d searched, %d failed: %s",
        service_id,
        patient_id,
        len(gathered.prefetched),
        len(gathered.fetched),
        len(gathered.problems),
        result.status,
    )
    timing = {"Server-Timing": f"fetch;dur={fetch_s * 1000:.3f}, engine;dur={engine_s * 1000:.3f}"}
    if card is None:
        call.outcome = f"{result.status}: no card"
        return _json({"cards": []}, timing)
    assert card.uuid is not None
    issued = partial(
        runtime.store.card_issued,
        IssuedCard(
            card.uuid,
            service_id,
            payload.hookInstance,
            trial.id,
            f"Patient/{patient_id}",
            result.status,
            day,
        ),
    )
    call.writes.append(issued)
    call.outcome = f"{result.status}: card"
    body = CdsResponsePublic(cards=[card]).model_dump(mode="json", exclude_none=True)
    return _json(body, timing)


async def _gather(
    queries: list[PrefetchQuery],
    readings: dict[str, list[dict[str, Any]] | None],
    patient_id: str,
    state: AppState,
    target: FhirTarget | None,
    wanted: frozenset[str],
) -> Gathered:
    needs_fhir = any(readings.get(q.key) is None for q in queries)
    if not needs_fhir or target is None or target.shared is not None:
        shared = target.shared if target is not None else None
        return await gather(
            queries,
            readings,
            patient_id,
            state.terms,
            fhir=shared,
            tx=state.tx,
            wanted=wanted,
            off_loop=state.off_loop,
        )
    settings = state.settings
    async with FhirClient(
        target.base_url,
        timeout_s=min(settings.fhir_timeout_s, settings.cds_time_budget_s),
        page_size=settings.fhir_page_size,
    ) as fhir:
        return await gather(
            queries,
            readings,
            patient_id,
            state.terms,
            fhir=fhir,
            token=target.token,
            tx=state.tx,
            wanted=wanted,
            off_loop=state.off_loop,
        )


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback on a card",
    response_model=FeedbackStoredPublic,
    responses={k: v for k, v in ERRORS.items() if k != 412},
)
async def feedback(
    service_id: str,
    request: Request,
    state: State,
    client: Annotated[CdsClient | None, Depends(_feedback_client)],
    payload: CdsFeedbackRequest,
) -> Response:
    """Store what the user did with cards (accepted / overridden, with the reason)."""
    call = _call(request)
    runtime = _runtime(request, state)
    trial = runtime.trial(service_id)
    call.trial_id = trial.id
    items = payload.feedback
    call.patients = await asyncio.to_thread(runtime.store.patients_of, [i.card for i in items])
    call.writes.append(
        partial(runtime.store.add_feedback, service_id, client.issuer if client else None, items)
    )
    call.outcome = f"{len(items)} stored"
    return _json(FeedbackStoredPublic(stored=len(items)).model_dump())
