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
a path. The background sweeps, their store and the schedule are part of the app state
(service/app_state.py): built at start; on shutdown running sweeps are asked to stop and
waited for.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse

from service.api.deps import Audit, audited, scoped
from service.api.state import State
from service.audit import AuditEntry
from service.errors import NotFound
from service.schemas import RankedListPublic
from service.security import Principal
from service.sweeps.background import BackgroundSweeps
from service.sweeps.report import attrition, csv_lines, diff_runs, fhir_bundle, ranked_json
from service.sweeps.report import run_public as public
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

__all__ = ["router"]

router = APIRouter(tags=["sweeps"])
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


Reader = Annotated[Principal, Depends(scoped(READ))]
Writer = Annotated[Principal, Depends(scoped(WRITE))]


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = model.model_dump(mode="json", by_alias=True)
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _run(sweeps: BackgroundSweeps, run_id: int, audit: AuditEntry) -> RunInfo:
    run = sweeps.store.get(run_id)
    audit.trial_id = run.trial_id
    return run


@router.post(
    "/sweeps",
    status_code=202,
    summary="Start a sweep",
    response_model=SweepPublic,
    responses=ERRORS,
    dependencies=[audited("sweep-start")],
)
def start_sweep(body: SweepCreate, state: State, caller: Writer, audit: Audit) -> Response:
    """Claim the trial (409 if a sweep of it is running) and sweep the configured source in
    the background; follow it at the returned `Location`."""
    audit.trial_id = body.trial
    state.trial(body.trial)
    run = state.sweeps.start(
        body.trial, body.as_of or state.today(), caller.subject, full=body.full
    )
    audit.outcome = f"started run {run.id}"
    return _json(public(run), 202, {"Location": f"/sweeps/{run.id}"})


@router.get(
    "/sweeps",
    summary="List sweeps",
    response_model=SweepListPublic,
    responses=ERRORS,
    dependencies=[audited("sweep-list")],
)
def list_sweeps(
    state: State,
    caller: Reader,
    audit: Audit,
    trial: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """Runs, newest first."""
    audit.trial_id = trial
    runs = state.sweeps.store.runs(trial, limit)
    audit.outcome = f"{len(runs)} runs"
    return _json(SweepListPublic(runs=[public(r) for r in runs]))


@router.get(
    "/sweeps/{run_id}",
    summary="A sweep's status",
    response_model=SweepPublic,
    responses=ERRORS,
    dependencies=[audited("sweep-status")],
)
def get_sweep(run_id: RunId, state: State, caller: Reader, audit: Audit) -> Response:
    """Status, progress (stage, done, total), counts, and how it ended."""
    run = _run(state.sweeps, run_id, audit)
    audit.outcome = f"run {run.id} {run.status}"
    return _json(public(run))


@router.post(
    "/sweeps/{run_id}/cancel",
    status_code=202,
    summary="Cancel a running sweep",
    response_model=SweepPublic,
    responses=ERRORS,
    dependencies=[audited("sweep-cancel")],
)
def cancel_sweep(run_id: RunId, state: State, caller: Writer, audit: Audit) -> Response:
    """Ask the sweep to stop; it ends `cancelled` at its next step (or next heartbeat, when
    it runs in another process). A run that has ended is returned as it is."""
    _run(state.sweeps, run_id, audit)
    run = state.sweeps.cancel(run_id)
    audit.outcome = f"run {run.id} {run.status}, cancel requested"
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
    dependencies=[audited("sweep-candidates")],
)
def sweep_candidates(
    run_id: RunId,
    state: State,
    caller: Reader,
    audit: Audit,
    output: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.json,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_RUN_ID, description="json and csv: the first N")
    ] = None,
) -> Response:
    """The ranked results of a completed run (409 while it runs, or if it failed)."""
    audit.action = f"sweep-candidates-{output}"
    _run(state.sweeps, run_id, audit)
    store = state.sweeps.store
    run = store.with_results(run_id)
    candidates_only = output is ExportFormat.fhir
    audit.patients = [
        s.patient
        for s in store.summaries(
            run.id, limit=None if candidates_only else limit, candidates_only=candidates_only
        )
    ]
    audit.outcome = f"run {run.id}: {len(audit.patients)} results as {output}"
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
    dependencies=[audited("sweep-attrition")],
)
def sweep_attrition(run_id: RunId, state: State, caller: Reader, audit: Audit) -> Response:
    """Per criterion in protocol order: verdict counts, patients remaining before it, how
    many it drops (`fail`) and leaves unknown."""
    run = _run(state.sweeps, run_id, audit)
    if run.attrition is None:
        run = state.sweeps.store.with_results(run_id)
    funnel = attrition(state.sweeps.store, run)
    audit.outcome = f"run {run.id}: {funnel.remaining} of {funnel.patients} remain"
    return _json(funnel)


@router.get(
    "/sweeps/{run_id}/diff",
    summary="What changed since another sweep",
    response_model=DiffPublic,
    responses=ERRORS,
    dependencies=[audited("sweep-diff")],
)
def sweep_diff(
    run_id: RunId,
    state: State,
    caller: Reader,
    audit: Audit,
    against: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_RUN_ID, description="The earlier run; default the previous completed one"
        ),
    ] = None,
) -> Response:
    """New candidates, dropped ones, status changes, and changed verdicts, each naming the
    criteria whose verdict changed; would-be new candidates with an open decision of the
    coordinator's apart, under `decided`."""
    store = state.sweeps.store
    run = _run(state.sweeps, run_id, audit)
    if against is None:
        earlier = store.previous_completed(run)
        if earlier is None:
            raise NotFound(f"no completed sweep of {run.trial_id} before run {run.id}")
    else:
        earlier = store.get(against)
    diff = diff_runs(store, earlier, run, state.decisions.by_patient(run.trial_id))
    changed = [
        *diff.new,
        *diff.dropped,
        *diff.status,
        *diff.verdicts,
        *diff.arrived,
        *diff.left,
        *diff.decided,
    ]
    audit.patients = [c.patient for c in changed]
    audit.outcome = f"runs {earlier.id}->{run.id}: {len(changed)} changed"
    return _json(diff)
