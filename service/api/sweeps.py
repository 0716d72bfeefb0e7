"""Sweeps over HTTP: start one, follow it, and read what it found.

    POST /sweeps                        start a sweep in the background (202 + the run)
    GET  /sweeps                        runs, newest first (?trial=, ?limit=)
    GET  /sweeps/{id}                   status, progress, counts
    POST /sweeps/{id}/cancel            ask a running sweep to stop
    GET  /sweeps/{id}/candidates        ?format=json (the ranked list) | csv | fhir (Bundle)
    GET  /sweeps/{id}/attrition         the funnel
    GET  /sweeps/{id}/diff              ?against=<id>; default the previous completed run

Scopes: `cohort-match/sweeps.read` to read, `cohort-match/sweeps.write` to start or cancel
(`cohort-match/*.read` grants reading only). Every call writes an audit row; rows of exports
and diffs name the patients the response discloses.

API and scheduled sweeps read COHORT_MATCH_SWEEP_DATA_DIR when set, else the FHIR server;
nothing in a request chooses the source, so a caller cannot point the service at a host or
a path. `lifespan` (entered from the app's lifespan) opens the store, runs the schedule, and
on shutdown asks running sweeps to stop and waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from service.api.deps import Caller, RequestId
from service.api.state import AppState, State
from service.audit import AuditRecord
from service.clock import today
from service.errors import Forbidden, NotFound, ServiceError
from service.schemas import RankedListPublic
from service.security import Principal
from service.sweeps.report import attrition, csv_lines, diff_runs, fhir_bundle, ranked_json
from service.sweeps.report import run_public as public
from service.sweeps.runner import BackgroundSweeps
from service.sweeps.schemas import (
    AttritionPublic,
    DiffPublic,
    SweepCreate,
    SweepListPublic,
    SweepPublic,
)
from service.sweeps.store import MAX_RUN_ID, RunInfo

# Run ids are database integers: a larger one is a 422 at the edge, never an overflow inside.
RunId = Annotated[int, Path(ge=1, le=MAX_RUN_ID, description="A sweep run's id")]

__all__ = ["lifespan", "router"]

router = APIRouter(tags=["sweeps"])
log = logging.getLogger(__name__)
READ, WRITE = "cohort-match/sweeps.read", "cohort-match/sweeps.write"
FHIR_JSON = "application/fhir+json"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {FHIR_JSON: {}}}
    for code, text in {
        400: "Bad request, or no sweep source configured (OperationOutcome)",
        401: "No or invalid bearer token",
        403: "Token lacks the scope",
        404: "Unknown trial or run",
        409: "A sweep of the trial is running, or the run has no results (yet)",
        422: "Parameters do not match the schema",
    }.items()
}


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"
    fhir = "fhir"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sweeps' part of the app's lifespan; needs `app.state.cohort`. Entered twice, the
    second time does nothing."""
    if getattr(app.state, "sweeps", None) is not None:
        yield
        return
    from service.sweeps.scheduler import SweepScheduler

    cohort: AppState = app.state.cohort
    sweeps = await asyncio.to_thread(BackgroundSweeps, cohort.settings)  # migrates the store
    try:
        scheduler = SweepScheduler(cohort.settings, sweeps, cohort.trials)
        scheduler.start()
    except BaseException:
        await asyncio.to_thread(sweeps.close)
        raise
    app.state.sweeps = sweeps
    app.state.sweep_scheduler = scheduler
    try:
        yield
    finally:
        scheduler.shutdown()
        app.state.sweeps = None
        await asyncio.to_thread(sweeps.close)


def _sweeps(request: Request) -> BackgroundSweeps:
    sweeps: BackgroundSweeps | None = getattr(request.app.state, "sweeps", None)
    if sweeps is None:
        raise ServiceError("sweeps are not started: the app's lifespan must enter sweeps.lifespan")
    return sweeps


Sweeps = Annotated[BackgroundSweeps, Depends(_sweeps)]


def _require(state: AppState, caller: Principal, scope: str) -> None:
    """The scope itself or `cohort-match/*.<read|write>`; reading never grants writing."""
    if state.validator is None:  # auth disabled: loopback only (enforced by Settings)
        return
    access = scope.rsplit(".", 1)[1]
    if scope in caller.scopes or f"cohort-match/*.{access}" in caller.scopes:
        return
    raise Forbidden(f"token lacks scope {scope}")


def _audit(
    state: AppState,
    request_id: str,
    caller: Principal,
    action: str,
    trial_id: str | None,
    patients: list[str],
    outcome: str,
) -> None:
    state.audit.record(
        AuditRecord(
            request_id, caller.subject, caller.client_id, action, trial_id, patients, outcome
        )
    )


class _Call:
    """The scope check, then one audit row however the call ends (a refused scope too)."""

    def __init__(
        self, state: AppState, request_id: str, caller: Principal, action: str, scope: str
    ) -> None:
        self.state, self.request_id, self.caller, self.action = state, request_id, caller, action
        self.scope = scope
        self.trial_id: str | None = None
        self.patients: list[str] = []
        self.outcome = "error"

    def __enter__(self) -> _Call:
        try:
            _require(self.state, self.caller, self.scope)
        except ServiceError as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def __exit__(self, kind: object, error: BaseException | None, _tb: object) -> None:
        if isinstance(error, ServiceError):
            self.outcome = f"error {error.status}"
        _audit(
            self.state,
            self.request_id,
            self.caller,
            self.action,
            self.trial_id,
            self.patients,
            self.outcome,
        )


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = model.model_dump(mode="json", by_alias=True)
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _run(sweeps: BackgroundSweeps, run_id: int, call: _Call) -> RunInfo:
    run = sweeps.store.get(run_id)
    call.trial_id = run.trial_id
    return run


@router.post(
    "/sweeps",
    status_code=202,
    summary="Start a sweep",
    response_model=SweepPublic,
    responses=ERRORS,
)
def start_sweep(
    body: SweepCreate, state: State, caller: Caller, request_id: RequestId, sweeps: Sweeps
) -> Response:
    """Claim the trial (409 if a sweep of it is running) and sweep the configured source in
    the background; follow it at the returned `Location`."""
    with _Call(state, request_id, caller, "sweep-start", WRITE) as call:
        call.trial_id = body.trial
        if body.trial not in state.trials:
            raise NotFound(f"unknown trial {body.trial!r}")
        run = sweeps.start(
            body.trial, body.as_of or today(state.settings), caller.subject, full=body.full
        )
        call.outcome = f"started run {run.id}"
        return _json(public(run), 202, {"Location": f"/sweeps/{run.id}"})


@router.get("/sweeps", summary="List sweeps", response_model=SweepListPublic, responses=ERRORS)
def list_sweeps(
    state: State,
    caller: Caller,
    request_id: RequestId,
    sweeps: Sweeps,
    trial: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """Runs, newest first."""
    with _Call(state, request_id, caller, "sweep-list", READ) as call:
        call.trial_id = trial
        runs = sweeps.store.runs(trial, limit)
        call.outcome = f"{len(runs)} runs"
        return _json(SweepListPublic(runs=[public(r) for r in runs]))


@router.get(
    "/sweeps/{run_id}", summary="A sweep's status", response_model=SweepPublic, responses=ERRORS
)
def get_sweep(
    run_id: RunId, state: State, caller: Caller, request_id: RequestId, sweeps: Sweeps
) -> Response:
    """Status, progress (stage, done, total), counts, and how it ended."""
    with _Call(state, request_id, caller, "sweep-status", READ) as call:
        run = _run(sweeps, run_id, call)
        call.outcome = f"run {run.id} {run.status}"
        return _json(public(run))


@router.post(
    "/sweeps/{run_id}/cancel",
    status_code=202,
    summary="Cancel a running sweep",
    response_model=SweepPublic,
    responses=ERRORS,
)
def cancel_sweep(
    run_id: RunId, state: State, caller: Caller, request_id: RequestId, sweeps: Sweeps
) -> Response:
    """Ask the sweep to stop; it ends `cancelled` at its next step (or next heartbeat, when
    it runs in another process). A run that has ended is returned as it is."""
    with _Call(state, request_id, caller, "sweep-cancel", WRITE) as call:
        _run(sweeps, run_id, call)
        run = sweeps.cancel(run_id)
        call.outcome = f"run {run.id} {run.status}, cancel requested"
        return _json(public(run), 202)


@router.get(
    "/sweeps/{run_id}/candidates",
    summary="A completed sweep's candidates",
    response_model=RankedListPublic,
    responses={
        **ERRORS,
        200: {
            "description": "json: the ranked list (every patient screened, best first); csv: "
            "one row per patient, one column per criterion verdict; fhir: a transaction "
            "Bundle with the ResearchStudy, a Group of the candidates and a ResearchSubject "
            "(status candidate) for each",
            "content": {"application/json": {}, "text/csv": {}, FHIR_JSON: {}},
        },
    },
)
def sweep_candidates(
    run_id: RunId,
    state: State,
    caller: Caller,
    request_id: RequestId,
    sweeps: Sweeps,
    output: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.json,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_RUN_ID, description="json and csv: the first N")
    ] = None,
) -> Response:
    """The ranked results of a completed run (409 while it runs, or if it failed)."""
    with _Call(state, request_id, caller, f"sweep-candidates-{output}", READ) as call:
        run = _run(sweeps, run_id, call)
        store = sweeps.store
        run = store.with_results(run_id)
        candidates_only = output is ExportFormat.fhir
        call.patients = [
            s.patient
            for s in store.summaries(
                run.id, limit=None if candidates_only else limit, candidates_only=candidates_only
            )
        ]
        call.outcome = f"run {run.id}: {len(call.patients)} results as {output}"
        if output is ExportFormat.fhir:
            trial = state.trials.get(run.trial_id)
            bundle = fhir_bundle(store, run, title=trial.title if trial else None)
            return Response(orjson.dumps(bundle), media_type=FHIR_JSON)
        name = f"sweep-{run.id}-{run.trial_id}.{output}"
        disposition = {"Content-Disposition": f'inline; filename="{name}"'}
        if output is ExportFormat.csv:
            lines: Iterator[str] = csv_lines(store, run, limit=limit)
            return StreamingResponse(lines, media_type="text/csv", headers=disposition)
        chunks: Iterator[bytes] = ranked_json(store, run, limit=limit)
        return StreamingResponse(chunks, media_type="application/json", headers=disposition)


@router.get(
    "/sweeps/{run_id}/attrition",
    summary="A completed sweep's funnel",
    response_model=AttritionPublic,
    responses=ERRORS,
)
def sweep_attrition(
    run_id: RunId, state: State, caller: Caller, request_id: RequestId, sweeps: Sweeps
) -> Response:
    """Per criterion in protocol order: verdict counts, patients remaining before it, how
    many it drops (`fail`) and leaves unknown."""
    with _Call(state, request_id, caller, "sweep-attrition", READ) as call:
        run = _run(sweeps, run_id, call)
        if run.attrition is None:
            run = sweeps.store.with_results(run_id)
        funnel = attrition(sweeps.store, run)
        call.outcome = f"run {run.id}: {funnel.remaining} of {funnel.patients} remain"
        return _json(funnel)


@router.get(
    "/sweeps/{run_id}/diff",
    summary="What changed since another sweep",
    response_model=DiffPublic,
    responses=ERRORS,
)
def sweep_diff(
    run_id: RunId,
    state: State,
    caller: Caller,
    request_id: RequestId,
    sweeps: Sweeps,
    against: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_RUN_ID, description="The earlier run; default the previous completed one"
        ),
    ] = None,
) -> Response:
    """New candidates, dropped ones, status changes, and changed verdicts, each naming the
    criteria whose verdict changed."""
    with _Call(state, request_id, caller, "sweep-diff", READ) as call:
        store = sweeps.store
        run = _run(sweeps, run_id, call)
        if against is None:
            earlier = store.previous_completed(run)
            if earlier is None:
                raise NotFound(f"no completed sweep of {run.trial_id} before run {run.id}")
        else:
            earlier = store.get(against)
        diff = diff_runs(store, earlier, run)
        changed = [
            *diff.new,
            *diff.dropped,
            *diff.status,
            *diff.verdicts,
            *diff.arrived,
            *diff.left,
        ]
        call.patients = [c.patient for c in changed]
        call.outcome = f"runs {earlier.id}->{run.id}: {len(changed)} changed"
        return _json(diff)
