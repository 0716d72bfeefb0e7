"""POST /trials/{trial_id}/match (one patient) and /candidates (a ranked list)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from service.api.deps import Caller, RequestId
from service.api.schemas import BundleInput, CandidatesRequest, MatchRequest
from service.api.state import AppState, OffLoopJsonRoute, State
from service.as_of import AsOf
from service.audit import AuditRecord
from service.clock import today
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.errors import (
    BadRequest,
    FhirError,
    FhirNotFound,
    NotConfigured,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unprocessable,
)
from service.facts import PatientFacts
from service.fhir import FhirClient, fetch_patient
from service.fhir.ids import InvalidFhirId, reference_id
from service.fhir.patient import add_resources, consult_terminology
from service.mappers import subject_of
from service.ranking import rank
from service.schemas import PatientResultPublic, RankedListPublic
from service.security import Principal, require_scope
from service.sources import bundle_entries
from service.terminology import Terminology

router = APIRouter(tags=["screening"], route_class=OffLoopJsonRoute)
log = logging.getLogger(__name__)
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


def _trial(state: AppState, trial_id: str) -> TrialDefinition:
    trial = state.trials.get(trial_id)
    if trial is None:
        raise NotFound(f"unknown trial {trial_id!r}")
    return trial


def _fhir(state: AppState) -> FhirClient:
    if state.fhir is None:
        raise NotConfigured("no FHIR server configured (COHORT_MATCH_FHIR_BASE_URL)")
    return state.fhir


def patient_id(text: str) -> str:
    """The id of "Patient/<id>" or "<id>", by the FHIR id rule (service/fhir/ids.py); 400."""
    try:
        return reference_id(text, "Patient")
    except InvalidFhirId as exc:
        raise BadRequest(str(exc)) from None


def _fhir_token(state: AppState, caller: Principal) -> str | None:
    return caller.token if state.settings.fhir_auth == "passthrough" else None


async def _audit(
    state: AppState,
    request_id: str,
    caller: Principal,
    action: str,
    trial_id: str,
    patients: list[str],
    outcome: str,
) -> None:
    """Write the audit row in a worker thread: a database commit must not stall the loop."""
    record = AuditRecord(
        request_id, caller.subject, caller.client_id, action, trial_id, patients, outcome
    )
    await state.audit.arecord(record)


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


@router.post(
    "/trials/{trial_id}/match",
    summary="Screen one patient",
    response_model=PatientResultPublic,
    responses=ERRORS,
)
async def match(
    trial_id: str,
    state: State,
    caller: Caller,
    request_id: RequestId,
    payload: Annotated[MatchRequest | BundleInput, Body()],
    as_of: Annotated[AsOf | None, Query(description="With a Bundle body: the as-of date")] = None,
) -> Response:
    """Fetch the patient from the FHIR server (body `{"patient": ...}`) or screen the
    resources of a FHIR Bundle sent as the body; returns the patient's result."""
    reference = "-"
    outcome = "error"
    timing: dict[str, float] = {}
    try:
        # Inside the try: a refused scope (403) or an unknown trial is audited too.
        require_scope(caller, "cohort-match/match.read")
        trial = _trial(state, trial_id)
        if isinstance(payload, BundleInput):
            check_entries(len(payload.entry), state.settings.max_bundle_entries, "the Bundle")
            started = time.perf_counter()
            facts = await _facts_from_bundle(payload, state, state.plans[trial_id].valuesets)
            timing["map"] = time.perf_counter() - started
            reference = facts.reference
            day = as_of or today(state.settings)
        else:
            ident = patient_id(payload.patient)
            reference = f"Patient/{ident}"
            day = payload.as_of or as_of or today(state.settings)
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
        outcome = result.status
        # Server-Timing (W3C) separates waiting for the FHIR server from our own work, for
        # operators and for scripts/bench_api.py.
        header = ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in timing.items())
        return Response(body, media_type=JSON, headers={"Server-Timing": header})
    except ServiceError as exc:
        outcome = f"error {exc.status}"
        raise
    finally:
        await _audit(state, request_id, caller, "match", trial_id, [reference], outcome)


def check_entries(count: int, limit: int, what: str) -> None:
    """413 for a body with more entries than COHORT_MATCH_MAX_BUNDLE_ENTRIES (mapping and
    screening grow with them; the byte limit alone lets 16 MB of tiny entries through)."""
    if count > limit:
        raise PayloadTooLarge(
            f"{what} has {count} entries; at most {limit} are screened "
            "(COHORT_MATCH_MAX_BUNDLE_ENTRIES)"
        )


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
)
async def candidates(
    trial_id: str,
    state: State,
    caller: Caller,
    request_id: RequestId,
    body: CandidatesRequest,
) -> Response:
    """Screen a list of patients, a Group's members, or (with neither) every patient on the
    server, and return them ranked."""
    ids: list[str] = []
    outcome = "error"
    try:
        require_scope(caller, "cohort-match/candidates.read")
        trial = _trial(state, trial_id)
        fhir = _fhir(state)
        token = _fhir_token(state, caller)
        day = body.as_of or today(state.settings)
        ids = await candidate_ids(fhir, body, token)
        results, resources, errors, unscreened = await screen_many(state, trial, ids, day, token)
        ranked = rank(results)
        if body.limit is not None:
            ranked = ranked[: body.limit]
        counts = {
            "patients": len(results),
            "likely_eligible": sum(r.status == "likely_eligible" for r in results),
            "possibly_eligible": sum(r.status == "possibly_eligible" for r in results),
            "ineligible": sum(r.status == "ineligible" for r in results),
            "resources": resources,
            "errors": errors,
        }
        outcome = f"{len(results)} screened"
        return _json(
            {
                "trial": {
                    "id": trial.id,
                    "version": trial.version,
                    "terminology": state.terms.version,
                },
                "as_of": day,
                "candidates": ranked,
                "counts": counts,
                "unscreened": unscreened,
            }
        )
    except ServiceError as exc:
        outcome = f"error {exc.status}"
        raise
    finally:
        await _audit(
            state,
            request_id,
            caller,
            "candidates",
            trial_id,
            [f"Patient/{i}" for i in ids],
            outcome,
        )


async def candidate_ids(fhir: FhirClient, body: CandidatesRequest, token: str | None) -> list[str]:
    if body.patients is not None:
        return list(dict.fromkeys(patient_id(p) for p in body.patients))
    if body.group is not None:
        try:
            group_id = reference_id(body.group, "Group")
        except InvalidFhirId as exc:
            raise BadRequest(str(exc)) from None
        try:
            group = await fhir.read("Group", group_id, token=token)
        except FhirNotFound as exc:
            raise NotFound(f"Group/{group_id} not found on the FHIR server") from exc
        members = [m.get("entity", {}).get("reference", "") for m in group.get("member") or ()]
        return list(dict.fromkeys(_member_ids(members)))
    return [str(p["id"]) async for p in fhir.search("Patient", {}, token=token) if p.get("id")]


def _member_ids(references: list[Any]) -> Iterator[str]:
    """Patient ids of a Group's members; a member whose reference breaks the id rule is
    skipped and logged by position (never sent to the server, never screened)."""
    for index, reference in enumerate(references):
        if not isinstance(reference, str) or not reference.startswith("Patient/"):
            continue
        try:
            yield reference_id(reference, "Patient")
        except InvalidFhirId:
            log.warning("Group member %d: reference is not a FHIR id; skipped", index)


async def screen_many(
    state: AppState, trial: TrialDefinition, ids: list[str], day: dt.date, token: str | None
) -> tuple[list[PatientResult], int, int, list[dict[str, str]]]:
    """Fetch and evaluate each patient; one that cannot be fetched is listed as unscreened
    (with why), never dropped silently."""
    fhir = _fhir(state)
    gate = asyncio.Semaphore(state.settings.fhir_concurrency)
    errors = 0
    resources = 0
    unscreened: list[dict[str, str]] = []

    async def one(ident: str) -> PatientResult | None:
        nonlocal errors, resources
        async with gate:
            try:
                fetched = await fetch_patient(
                    fhir, ident, state.plans[trial.id], state.terms, token=token, tx=state.tx
                )
            except FhirError as exc:
                errors += 1
                unscreened.append({"patient": f"Patient/{ident}", "reason": exc.message})
                log.warning("candidate Patient/%s not screened: %s", ident, type(exc).__name__)
                return None
        resources += fetched.resources
        errors += len(fetched.facts.problems)  # failed searches and unreadable records
        return await state.off_loop(
            partial(evaluate, mrn_type=state.settings.mrn_type),
            trial,
            fetched.facts,
            day,
            state.terms,
        )

    done = await asyncio.gather(*(one(i) for i in ids))
    return [r for r in done if r is not None], resources, errors, unscreened
