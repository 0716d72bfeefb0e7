"""Clinician pages, server-rendered (Jinja2), behind a SMART session (service/api/smart.py).

- `/app/patient[?id=&trial=&as_of=]`: one patient's checklist, grouped inclusion /
  exclusion, each verdict with its reason and evidence linked to the source resource on the
  EHR, the unknowns as "what to check next", and the status and score explained. Without
  `id`, the patient of the launch context. A session launched for one patient cannot open
  another.
- `/app/cohort?trial=[&status=&as_of=]`: ranked candidates on demand, filtered by status,
  with the attrition funnel; the page streams a progress line while patients are screened.
  Needs a session with user-level scopes (a standalone launch as a practitioner).
- `/app/cohort.csv?trial=`: the ranked list as `cohort-match screen --format csv` writes it.

Data comes from the EHR's FHIR server (the session's `iss`) with the session's access token,
through the same fetch and engine as POST /match and /candidates (the candidate helpers of
service/api/match.py are reused, not copied). Every page that shows patient data writes an
audit row. Errors are plain sentences on the page; never a stack trace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.deps import RequestId
from service.api.match import candidate_ids, patient_id, screen_many
from service.api.schemas import CandidatesRequest
from service.api.smart import Smart, error_page, page_session, set_session_cookie, signin_page
from service.api.state import AppState, State
from service.audit import AuditRecord
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.errors import BadRequest, FhirAuthError, FhirError, FhirNotFound, ServiceError
from service.fhir import FhirClient, fetch_patient
from service.ranking import rank
from service.smart import SmartRuntime, SmartSession
from service.web import render, stylesheet
from service.web.responses import html, stream
from service.web.views import (
    STATUS_LABEL,
    candidates_csv,
    checklist,
    display_user,
    explain,
    funnel,
    next_check,
    patient_banner,
)

router = APIRouter(tags=["pages"], include_in_schema=False)
log = logging.getLogger(__name__)


class PageError(Exception):
    """A refusal shown to the user as a page: a title, a plain sentence and a status."""

    def __init__(self, title: str, message: str, status: int) -> None:
        super().__init__(message)
        self.title = title
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Screened:
    trial: TrialDefinition
    day: dt.date
    ranked: list[PatientResult]
    unscreened: list[dict[str, str]]
    ids: list[str]


def _trial(state: AppState, trial_id: str | None) -> TrialDefinition:
    wanted = trial_id or state.settings.smart_trial or min(state.trials, default=None)
    trial = state.trials.get(wanted) if wanted else None
    if trial is None:
        raise PageError("Unknown trial", f"cohort-match does not serve a trial {wanted!r}.", 404)
    return trial


def _day(as_of: str | None) -> dt.date:
    if not as_of:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(as_of)
    except ValueError:
        raise PageError(
            "Bad date", f"as_of must be a date YYYY-MM-DD, not {as_of!r}.", 400
        ) from None


def _fhir_failure(exc: FhirError, iss: str) -> PageError:
    if isinstance(exc, FhirAuthError):
        return PageError(
            "The EHR refused access",
            f"The FHIR server at {iss} refused the request. Your sign-in may not cover these "
            "records; launch cohort-match again from the EHR.",
            403,
        )
    return PageError("The EHR did not answer", f"Could not read from {iss}: {exc.message}", 502)


def _nav(trial: TrialDefinition, day: dt.date) -> str:
    return "?" + urlencode({"trial": trial.id, "as_of": day.isoformat()})


def _audit(
    state: AppState,
    request_id: str,
    session: SmartSession,
    action: str,
    trial_id: str,
    patients: list[str],
    outcome: str,
) -> None:
    state.audit.record(
        AuditRecord(
            request_id,
            session.user,
            state.settings.smart_client_id,
            action,
            trial_id,
            patients,
            outcome,
        )
    )


def _here(request: Request) -> str:
    """This page's path and query without the one-time ticket (for sign-in links)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "ticket"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


def _user_level(session: SmartSession) -> bool:
    return any(s.startswith(("user/", "system/")) for s in session.scopes())


@router.get("/app/static/app.css")
async def css() -> Response:
    return Response(
        stylesheet(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/app/patient")
async def patient_page(
    request: Request,
    state: State,
    smart: Smart,
    request_id: RequestId,
    id: str | None = None,  # the query parameter's name, as in FHIR's _id
    trial: str | None = None,
    as_of: str | None = None,
    ticket: str | None = None,
) -> Response:
    session, from_ticket = await page_session(request, smart, ticket)
    if session is None:
        return signin_page(
            smart,
            _here(request),
            "Open cohort-match from a patient's chart in the EHR, or sign in here.",
        )
    response: Response
    try:
        body = await _patient_body(state, smart, session, request_id, id, trial, as_of)
        response = html(body, smart.frame_ancestors())
    except PageError as exc:
        response = error_page(smart, exc.title, exc.message, exc.status, request_id)
    if from_ticket:
        set_session_cookie(response, request, smart, session.id)
    return response


async def _patient_body(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    request_id: str,
    ident: str | None,
    trial_id: str | None,
    as_of: str | None,
) -> str:
    trial = _trial(state, trial_id)
    day = _day(as_of)
    try:
        wanted = patient_id(ident) if ident else session.patient
    except BadRequest as exc:
        raise PageError("Not a patient", exc.message, 400) from None
    if wanted is None:
        raise PageError(
            "No patient selected",
            "The EHR did not say which patient to open. Choose one on the cohort page, or "
            "launch cohort-match from a patient's chart.",
            400,
        )
    if session.patient is not None and wanted != session.patient:
        raise PageError(
            "Another patient",
            f"This session was opened for Patient/{session.patient}. Launch cohort-match "
            "from the other patient's chart to see theirs.",
            403,
        )
    reference = f"Patient/{wanted}"
    fhir = smart.fhir(session.iss)
    outcome = "error"
    try:
        # Both requests run to the end (no orphaned request when one fails); the fetch's
        # error, if any, is the one reported. The Patient read is only for the banner.
        fetched, resource = await asyncio.gather(
            fetch_patient(
                fhir, wanted, state.plans[trial.id], state.terms, token=session.access_token
            ),
            fhir.read("Patient", wanted, token=session.access_token),
            return_exceptions=True,
        )
        if isinstance(fetched, BaseException):
            raise fetched
        if isinstance(resource, BaseException):
            resource = None
        result = evaluate(trial, fetched.facts, day, state.terms)
        outcome = result.status
    except FhirNotFound:
        outcome = "error 404"
        raise PageError(
            "Patient not found", f"{reference} was not found on {session.iss}.", 404
        ) from None
    except FhirError as exc:
        outcome = f"error {exc.status}"
        raise _fhir_failure(exc, session.iss) from None
    finally:
        _audit(state, request_id, session, "page.patient", trial.id, [reference], outcome)
    tally = {v: 0 for v in ("pass", "fail", "unknown", "not_applicable")}
    for criterion in result.criteria:
        tally[criterion.verdict] += 1
    banner: dict[str, Any] = patient_banner(resource)
    banner["show"] = session.need_patient_banner
    return render(
        "patient.html",
        title=f"{trial.id} checklist",
        user=display_user(session.user, session.iss),
        nav_query=_nav(trial, day),
        trial=trial,
        result=result,
        banner=banner,
        status_label=STATUS_LABEL[result.status],
        explanation=explain(result, trial),
        tally=tally,
        sheet=checklist(result, session.iss),
        iss=session.iss,
    )


def _cohort_refusal(
    smart: SmartRuntime, session: SmartSession | None, request: Request
) -> Response | None:
    """The sign-in page when there is no session fit for the cohort page, else None."""
    if session is None:
        return signin_page(
            smart,
            _here(request),
            "The coordinator page needs a sign-in through your EHR as a practitioner.",
        )
    if not _user_level(session):
        return signin_page(
            smart,
            _here(request),
            "This session was opened for a single patient. Sign in as a practitioner to see "
            "the cohort.",
            status=403,
        )
    return None


async def _screen(
    state: AppState,
    fhir: FhirClient,
    trial: TrialDefinition,
    day: dt.date,
    token: str,
    progress: asyncio.Queue[str] | None = None,
) -> Screened:
    """Every patient on the server, screened and ranked, in batches so progress can be told.
    Uses /candidates' own helpers with the EHR's client in place of the configured one."""
    ids = await candidate_ids(fhir, CandidatesRequest(), token)
    if progress is not None:
        await progress.put(f"Screening {len(ids)} patients…")
    on_ehr = replace(state, fhir=fhir)
    batch = max(1, state.settings.fhir_concurrency * 4)
    results: list[PatientResult] = []
    unscreened: list[dict[str, str]] = []
    for start in range(0, len(ids), batch):
        done, _, _, missing = await screen_many(
            on_ehr, trial, ids[start : start + batch], day, token
        )
        results += done
        unscreened += missing
        if progress is not None and start + batch < len(ids):
            await progress.put(f"Screened {start + batch} of {len(ids)} patients…")
    return Screened(trial, day, rank(results), unscreened, ids)


def _counts(ranked: list[PatientResult]) -> dict[str, int]:
    return {
        "patients": len(ranked),
        "likely_eligible": sum(r.status == "likely_eligible" for r in ranked),
        "possibly_eligible": sum(r.status == "possibly_eligible" for r in ranked),
        "ineligible": sum(r.status == "ineligible" for r in ranked),
    }


def _status_filter(status: str | None) -> str | None:
    if not status:
        return None
    if status not in STATUS_LABEL:
        raise PageError("Unknown status", f"status must be one of {', '.join(STATUS_LABEL)}.", 400)
    return status


def _rows(screened: Screened, status: str | None) -> list[dict[str, Any]]:
    rows = []
    for result in screened.ranked:
        if status is not None and result.status != status:
            continue
        ident = result.patient.reference.removeprefix("Patient/")
        query = {"id": ident, "trial": screened.trial.id, "as_of": screened.day.isoformat()}
        rows.append(
            {
                "rank": result.rank,
                "reference": result.patient.reference,
                "href": "/app/patient?" + urlencode(query),
                "status": result.status,
                "status_label": STATUS_LABEL[result.status],
                "score": result.score,
                "age": result.patient.age,
                "sex": result.patient.sex,
                "fails": sum(c.verdict == "fail" for c in result.criteria),
                "unknowns": sum(c.verdict == "unknown" for c in result.criteria),
                "next": next_check(result),
            }
        )
    return rows


@router.get("/app/cohort")
async def cohort_page(
    request: Request,
    state: State,
    smart: Smart,
    request_id: RequestId,
    trial: str | None = None,
    status: str | None = None,
    as_of: str | None = None,
    ticket: str | None = None,
) -> Response:
    session, from_ticket = await page_session(request, smart, ticket)
    refused = _cohort_refusal(smart, session, request)
    if refused is not None:
        return refused
    assert session is not None
    try:
        chosen = _trial(state, trial)
        day = _day(as_of)
        wanted = _status_filter(status)
    except PageError as exc:
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    head = render(
        "cohort_start.html",
        title=f"{chosen.id} candidates",
        user=display_user(session.user, session.iss),
        nav_query=_nav(chosen, day),
        trial=chosen,
        as_of=day.isoformat(),
        iss=session.iss,
        status=wanted,
        statuses=list(STATUS_LABEL.items()),
    )
    response = stream(
        _cohort_chunks(state, smart, session, request_id, head, chosen, day, wanted),
        smart.frame_ancestors(),
    )
    if from_ticket:
        set_session_cookie(response, request, smart, session.id)
    return response


async def _cohort_chunks(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    request_id: str,
    head: str,
    trial: TrialDefinition,
    day: dt.date,
    status: str | None,
) -> AsyncIterator[str]:
    """The page head at once, then a progress line per batch, then the results."""
    yield head
    progress: asyncio.Queue[str] = asyncio.Queue()
    work = asyncio.create_task(
        _screen(state, smart.fhir(session.iss), trial, day, session.access_token, progress)
    )
    while not work.done():
        waiter = asyncio.create_task(progress.get())
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            yield f"<p>{waiter.result()}</p>\n"
        else:
            waiter.cancel()
    outcome = "error"
    ids: list[str] = []
    try:
        screened = work.result()
        ids = screened.ids
        outcome = f"{len(screened.ranked)} screened"
        query = {"trial": trial.id, "as_of": day.isoformat()}
        if status:
            query["status"] = status
        yield render(
            "cohort_results.html",
            counts=_counts(screened.ranked),
            status=status,
            status_label=STATUS_LABEL.get(status or "", ""),
            shown=_rows(screened, status),
            unscreened=screened.unscreened,
            funnel=funnel(trial, screened.ranked),
            csv_href="/app/cohort.csv?" + urlencode(query),
        )
    except FhirError as exc:
        outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=_fhir_failure(exc, session.iss).message)
    except ServiceError as exc:
        outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=exc.message)
    except Exception:
        log.exception("cohort page failed (request %s)", request_id)
        yield render(
            "cohort_failed.html",
            message=f"Something went wrong while screening; the request id is {request_id}.",
        )
    finally:
        _audit(
            state,
            request_id,
            session,
            "page.cohort",
            trial.id,
            [f"Patient/{i}" for i in ids],
            outcome,
        )


@router.get("/app/cohort.csv")
async def cohort_csv(
    request: Request,
    state: State,
    smart: Smart,
    request_id: RequestId,
    trial: str | None = None,
    status: str | None = None,
    as_of: str | None = None,
) -> Response:
    session, _ = await page_session(request, smart, None)
    refused = _cohort_refusal(smart, session, request)
    if refused is not None:
        return refused
    assert session is not None
    outcome = "error"
    ids: list[str] = []
    chosen: TrialDefinition | None = None
    try:
        chosen = _trial(state, trial)
        day = _day(as_of)
        wanted = _status_filter(status)
        screened = await _screen(state, smart.fhir(session.iss), chosen, day, session.access_token)
        ids = screened.ids
        outcome = f"{len(screened.ranked)} screened"
    except PageError as exc:
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    except FhirError as exc:
        failure = _fhir_failure(exc, session.iss)
        outcome = f"error {exc.status}"
        return error_page(smart, failure.title, failure.message, failure.status, request_id)
    finally:
        if chosen is not None:
            _audit(
                state,
                request_id,
                session,
                "page.cohort.csv",
                chosen.id,
                [f"Patient/{i}" for i in ids],
                outcome,
            )
    ranked = [r for r in screened.ranked if wanted is None or r.status == wanted]
    filename = f"{chosen.id}-candidates-{day.isoformat()}.csv"
    return Response(
        candidates_csv(chosen, ranked),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
