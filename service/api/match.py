"""POST /trials/{trial_id}/match (one patient) and /candidates (a ranked list).

Parse, call, render: one patient is fetched (or read from a Bundle body) and evaluated here;
a list is screened by service/candidates.py. The scope check and the audit row are
dependencies (service/api/deps.py).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response

from service.api.deps import Audit, audited, scoped
from service.api.schemas import BundleInput, CandidatesRequest, MatchRequest
from service.api.state import OffLoopJsonRoute, State
from service.app_state import AppState
from service.as_of import AsOf
from service.candidates import candidate_ids, patient_id, screen_patients
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.errors import BadRequest, FhirNotFound, NotConfigured, NotFound, Unprocessable
from service.facts import PatientFacts
from service.fetching import add_resources, consult_terminology, fetch_patient
from service.fhir import FhirClient
from service.fhir.ids import InvalidFhirId, reference_id
from service.mappers import subject_of
from service.ranked_output import json_chunks, ranked_bodies
from service.schemas import PatientResultPublic, RankedListPublic
from service.security import Principal
from service.sources import bundle_entries
from service.terminology import Terminology

router = APIRouter(tags=["screening"], route_class=OffLoopJsonRoute)
JSON = "application/json"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/fhir+json": {}}}
    for code, text in {
        400: "Bad request (OperationOutcome)",
        401: "No or invalid bearer token",
        403: "Token lacks the scope",
        404: "Unknown trial or patient",
        422: "Body does not match the schema",
        502: "FHIR server error",
        504: "FHIR server timed out",
    }.items()
}


def _fhir(state: AppState) -> FhirClient:
    if state.fhir.configured is None:
        raise NotConfigured("no FHIR server configured (COHORT_MATCH_FHIR_BASE_URL)")
    return state.fhir.configured


def _fhir_token(state: AppState, caller: Principal) -> str | None:
    return caller.token if state.settings.fhir_auth == "passthrough" else None


@router.post(
    "/trials/{trial_id}/match",
    summary="Screen one patient",
    response_model=PatientResultPublic,
    responses=ERRORS,
    dependencies=[audited("match")],
)
async def match(
    trial_id: str,
    state: State,
    caller: Annotated[Principal, Depends(scoped("cohort-match/match.read"))],
    audit: Audit,
    payload: Annotated[MatchRequest | BundleInput, Body()],
    as_of: Annotated[AsOf | None, Query(description="With a Bundle body: the as-of date")] = None,
) -> Response:
    """Fetch the patient from the FHIR server (body `{"patient": ...}`) or screen the
    resources of a FHIR Bundle sent as the body; returns the patient's result."""
    trial = state.trial(trial_id)
    timing: dict[str, float] = {}
    if isinstance(payload, BundleInput):
        state.check_entries(len(payload.entry), "the Bundle")
        started = time.perf_counter()
        facts = await _facts_from_bundle(payload, state, state.plans[trial_id].valuesets)
        timing["map"] = time.perf_counter() - started
        reference = facts.reference
        audit.patients = [reference]
        day = as_of or state.today()
    else:
        ident = patient_id(payload.patient)
        reference = f"Patient/{ident}"
        audit.patients = [reference]
        day = payload.as_of or as_of or state.today()
        try:
            fetched = await fetch_patient(
                _fhir(state),
                ident,
                state.plans[trial_id],
                state.terms,
                token=_fhir_token(state, caller),
                tx=state.tx,
            )
        except FhirNotFound as exc:
            raise NotFound(f"{reference} not found on the FHIR server") from exc
        facts = fetched.facts
        timing["fhir"], timing["map"] = fetched.wait_s, fetched.map_s
    born = facts.demographics.birth_date if facts.demographics else None
    if born is not None and day < born:
        raise Unprocessable(f"as_of {day} is before {reference} was born")
    started = time.perf_counter()
    result, body = await state.off_loop(
        _screen, trial, facts, day, state.terms, state.settings.mrn_type
    )
    timing["engine"] = time.perf_counter() - started
    audit.outcome = result.status
    # Server-Timing (W3C) separates waiting for the FHIR server from our own work, for
    # operators and for scripts/bench_api.py.
    header = ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in timing.items())
    return Response(body, media_type=JSON, headers={"Server-Timing": header})


def _screen(
    trial: TrialDefinition, facts: PatientFacts, day: dt.date, terms: Terminology, mrn_type: str
) -> tuple[PatientResult, bytes]:
    """Evaluate and serialise: CPU work, run off the event loop."""
    result = evaluate(trial, facts, day, terms, mrn_type=mrn_type)
    return result, orjson.dumps(result)


async def _facts_from_bundle(
    bundle: BundleInput, state: AppState, wanted: frozenset[str]
) -> PatientFacts:
    """The Bundle's one patient: entries read and mapped on the CPU threads; the terminology
    server (if any) asked in between, on the loop (it is I/O)."""
    resources, reference = await state.off_loop(_bundle_patient, bundle)
    facts = PatientFacts(reference)
    await consult_terminology(facts, resources, tx=state.tx, wanted=wanted)
    await state.off_loop(add_resources, facts, resources, state.terms)
    return facts


def _bundle_patient(bundle: BundleInput) -> tuple[list[dict[str, Any]], str]:
    resources = [
        r
        # The entries as parsed (a model_dump would copy 16 MB again, for nothing).
        for r, _, error in bundle_entries({"entry": bundle.entry}, "body")
        if r is not None and error is None
    ]
    patients = {subject_of(r) for r in resources} - {None}
    if len(patients) != 1:
        raise BadRequest(
            f"the Bundle must hold exactly one patient's resources (found {len(patients)})"
        )
    reference = str(patients.pop())
    try:
        reference_id(reference, "Patient")
    except InvalidFhirId as exc:
        raise BadRequest(f"the Bundle's patient: {exc}") from None
    return resources, reference


@router.post(
    "/trials/{trial_id}/candidates",
    summary="Rank several patients",
    response_model=RankedListPublic,
    responses=ERRORS,
    dependencies=[audited("candidates")],
)
async def candidates(
    trial_id: str,
    state: State,
    caller: Annotated[Principal, Depends(scoped("cohort-match/candidates.read"))],
    audit: Audit,
    body: CandidatesRequest,
) -> Response:
    """Screen a list of patients, a Group's members, or (with neither) every patient on the
    server, and return them ranked."""
    trial = state.trial(trial_id)
    fhir = _fhir(state)
    token = _fhir_token(state, caller)
    day = body.as_of or state.today()
    ids = await candidate_ids(fhir, body.patients, body.group, token)
    audit.patients = [f"Patient/{i}" for i in ids]
    screened = await screen_patients(state, fhir, trial, ids, day, token)
    audit.outcome = f"{len(screened.ranked)} screened"
    counts = {**screened.counts(), "resources": screened.resources, "errors": screened.errors}
    head = {
        "trial": {"id": trial.id, "version": trial.version, "terminology": state.terms.version},
        "as_of": day,
    }
    bodies = ranked_bodies(orjson.dumps(result) for result in screened.ranked[: body.limit])
    chunks = json_chunks(head, bodies, counts, {"unscreened": screened.unscreened})
    return Response(b"".join(chunks), media_type=JSON)
