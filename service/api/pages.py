"""Clinician pages, server-rendered (Jinja2), behind a SMART session (service/api/smart.py).

- `/app/patient[?id=&trial=&as_of=]`: one patient's checklist, grouped inclusion /
  exclusion, each verdict with its reason and evidence linked to the source resource on the
  EHR, the unknowns as "what to check next", and the status and score explained. Without
  `id`, the patient of the launch context. A session launched for one patient cannot open
  another.
- `/app/cohort?trial=[&status=&as_of=&fresh=1]`: ranked candidates, filtered by status, with
  the attrition funnel: from the newest completed sweep of the trial when there is one of the
  session's FHIR server (`_same_server`) that matches the trial and code tables as served and
  `as_of` (when given), saying "From sweep #N ... — screen now"; otherwise (or with
  `fresh=1`) screened on demand, the page streaming a progress line per batch. Needs a
  session with user-level scopes (a standalone launch as a practitioner).
- `/app/cohort.csv?trial=[&status=&as_of=&fresh=1&sweep=N]`: the ranked list as
  `cohort-match screen --format csv` writes it, from the same source the page chose (the
  page's link names its sweep, so a sweep completing in between does not change it).

On demand, data comes from the EHR's FHIR server (the session's `iss`) with the session's
access token, through the same fetch and engine as POST /match and /candidates (the
candidate helpers of service/api/match.py are reused, not copied); from a sweep, the stored
results, funnel and CSV come from service/sweeps/report.py. Patient links always open the
live checklist on the EHR. Every page that shows patient data writes an audit row.
Errors are plain sentences on the page; never a stack trace.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import RequestId
from service.api.match import candidate_ids, patient_id, screen_many
from service.api.schemas import CandidatesRequest
from service.api.smart import Smart, error_page, page_session, set_session_cookie, signin_page
from service.api.state import AppState, State
from service.as_of import check_as_of
from service.audit import AuditRecord
from service.clock import today
from service.config import Settings
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.errors import (
    BadRequest,
    FhirAuthError,
    FhirError,
    FhirNotFound,
    NotFound,
    ServiceError,
)
from service.fhir import FhirClient, fetch_patient
from service.ranking import rank
from service.results_csv import CSV_HEAD
from service.smart import SmartRuntime, SmartSession
from service.sweeps.report import attrition, csv_lines
from service.sweeps.store import RunInfo, SweepStore
from service.web import render, stylesheet
from service.web.responses import html, stream
from service.web.views import (
    STATUS_LABEL,
    FunnelRow,
    candidates_csv,
    checklist,
    display_user,
    explain,
    funnel,
    next_check,
    patient_banner,
    short_step,
    stored_funnel,
)

router = APIRouter(tags=["pages"], include_in_schema=False)
log = logging.getLogger(__name__)
SWEEPS_LOOKED_AT = 50  # newest runs of the trial searched for one the cohort page can show


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


def _day(as_of: str | None, settings: Settings) -> dt.date:
    if not as_of:
        return today(settings)
    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise PageError(
            "Bad date", f"as_of must be a date YYYY-MM-DD, not {as_of!r}.", 400
        ) from None
    try:
        return check_as_of(day)
    except ValueError as exc:
        raise PageError("Bad date", f"{exc}.", 400) from None


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


async def _audit(
    state: AppState,
    request_id: str,
    session: SmartSession,
    action: str,
    trial_id: str,
    patients: list[str],
    outcome: str,
) -> None:
    await state.audit.arecord(
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
    day = _day(as_of, state.settings)
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
                fhir,
                wanted,
                state.plans[trial.id],
                state.terms,
                token=session.access_token,
                tx=state.tx,
            ),
            fhir.read("Patient", wanted, token=session.access_token),
            return_exceptions=True,
        )
        if isinstance(fetched, BaseException):
            raise fetched
        if isinstance(resource, BaseException):
            resource = None
        result = evaluate(trial, fetched.facts, day, state.terms, mrn_type=state.settings.mrn_type)
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
        await _audit(state, request_id, session, "page.patient", trial.id, [reference], outcome)
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


def _row(
    trial: TrialDefinition,
    day: dt.date,
    *,
    rank: int | None,
    reference: str,
    status: str,
    score: float,
    age: int | None,
    sex: str | None,
    verdicts: Sequence[str],
    next_: str | None,
    mrn: str | None = None,
) -> dict[str, Any]:
    """One line of the ranked table; the link opens the live checklist on the EHR."""
    query = {"id": reference.removeprefix("Patient/"), "trial": trial.id, "as_of": day.isoformat()}
    return {
        "rank": rank,
        "reference": reference,
        "href": "/app/patient?" + urlencode(query),
        "status": status,
        "status_label": STATUS_LABEL[status],
        "score": score,
        "age": age,
        "sex": sex,
        "mrn": mrn,
        "fails": sum(v == "fail" for v in verdicts),
        "unknowns": sum(v == "unknown" for v in verdicts),
        "next": next_,
    }


def _rows(screened: Screened, status: str | None) -> list[dict[str, Any]]:
    return [
        _row(
            screened.trial,
            screened.day,
            rank=result.rank,
            reference=result.patient.reference,
            status=result.status,
            score=result.score,
            age=result.patient.age,
            sex=result.patient.sex,
            verdicts=[c.verdict for c in result.criteria],
            next_=result.status_reason or next_check(result),
            mrn=result.patient.mrn,
        )
        for result in screened.ranked
        if status is None or result.status == status
    ]


# ---------------------------------------------------------------- from a sweep
def _sweep_store(request: Request) -> SweepStore | None:
    """The store of the app's sweeps (service/api/sweeps.lifespan), if they are started."""
    sweeps = getattr(request.app.state, "sweeps", None)
    store: SweepStore | None = getattr(sweeps, "store", None)
    return store


def _same_server(run: RunInfo, iss: str, smart: SmartRuntime, settings: Settings) -> bool:
    """Whether `run` read the FHIR server behind the session's EHR: only then are its patient
    ids the EHR's (the page's links open them there) and its data the EHR's data.

    - A run of the session's `iss` itself (`--source <iss>`): yes.
    - A run of COHORT_MATCH_FHIR_BASE_URL (what API and scheduled sweeps export, with the
      backend credentials): yes only when the session's `iss` is the one and only EHR on the
      allowlist (COHORT_MATCH_SMART_ISSUERS). Such a deployment says "the EHR we trust fronts
      the server we sweep", as an EHR that proxies its FHIR server does (the test EHR
      does). With two EHRs on the allowlist the configured server is behind at most one of
      them, and its `Patient/p1` could be someone else on the other: we do not guess.
    - A run of files (COHORT_MATCH_SWEEP_DATA_DIR, the CLI's --data): never; nothing ties a
      directory's patient ids to the EHR's patients.
    """
    if run.source_kind != "fhir":
        return False
    source = run.source.rstrip("/")
    if source == iss.rstrip("/"):
        return True
    configured = (settings.fhir_base_url or "").rstrip("/")
    return bool(configured) and source == configured and smart.issuers == (smart.allowed(iss),)


def _showable(
    run: RunInfo, state: AppState, smart: SmartRuntime, trial: TrialDefinition, iss: str
) -> bool:
    """A completed run of the trial, results kept, of the trial file and code tables the app
    serves now (else its verdicts are not what a screen now would give), from the EHR's
    server."""
    return (
        run.trial_id == trial.id
        and run.has_results
        and run.trial_version == trial.version
        and run.terminology_version == state.terms.version
        and _same_server(run, iss, smart, state.settings)
    )


def _choose_sweep(
    store: SweepStore,
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    trial: TrialDefinition,
    as_of: dt.date | None,
    sweep_id: int | None,
) -> RunInfo | None:
    """The sweep to show, or None to screen on demand (blocking: call in a thread).

    `sweep_id` (the page's CSV link) must name a run that can still be shown; otherwise the
    newest showable run of the trial, if `as_of` is not given or is the run's."""
    if sweep_id is not None:
        try:
            run: RunInfo | None = store.get(sweep_id)
        except NotFound:
            run = None
        if (
            run is None
            or not _showable(run, state, smart, trial, session.iss)
            or (as_of is not None and run.as_of != as_of)
        ):
            raise PageError(
                "Sweep not available",
                f"Sweep #{sweep_id} of {trial.id} cannot be shown here (its results may have "
                "been replaced by newer runs). Open the cohort page again.",
                409,
            )
        return run
    try:
        runs = store.runs(trial.id, limit=SWEEPS_LOOKED_AT)
    except SQLAlchemyError:  # the store is down: screening on demand still works
        log.warning("cohort page: could not read sweep runs; screening on demand", exc_info=True)
        return None
    newest = next((r for r in runs if _showable(r, state, smart, trial, session.iss)), None)
    if newest is None or (as_of is not None and newest.as_of != as_of):
        return None
    return newest


def _fresh(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _sweep_id(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PageError("Bad sweep", f"sweep must be a run number, not {value!r}.", 400) from None


def _sweep_note(
    run: RunInfo, trial: TrialDefinition, status: str | None, explicit: bool
) -> dict[str, Any]:
    """ "From sweep #N completed <time>, as of <date> — screen now": the link screens on
    demand, as of today unless the page was asked for a date."""
    query = {"trial": trial.id}
    if explicit:
        query["as_of"] = run.as_of.isoformat()
    if status:
        query["status"] = status
    query["fresh"] = "1"
    ended = run.ended_at or run.heartbeat_at
    return {
        "id": run.id,
        "completed": f"{ended.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "as_of": run.as_of.isoformat(),
        "fresh_href": "/app/cohort?" + urlencode(query),
    }


@dataclass(frozen=True)
class Stored:
    """What the cohort page shows of a sweep."""

    rows: list[dict[str, Any]]
    funnel: list[FunnelRow]


def _stored(store: SweepStore, run: RunInfo, trial: TrialDefinition, status: str | None) -> Stored:
    """The run's ranked rows (the status filter applied) and its funnel (blocking)."""
    rows = []
    for body in store.results(run.id):
        result = orjson.loads(body)
        if status is not None and result["status"] != status:
            continue
        patient = result["patient"]
        rows.append(
            _row(
                trial,
                run.as_of,
                rank=result["rank"],
                reference=patient["reference"],
                status=result["status"],
                score=result["score"],
                age=patient["age"],
                sex=patient["sex"],
                verdicts=[c["verdict"] for c in result["criteria"]],
                next_=result.get("status_reason") or short_step(result["next_steps"]),
                mrn=patient.get("mrn"),
            )
        )
    return Stored(rows, stored_funnel(attrition(store, run)))


def _stored_csv(store: SweepStore, run: RunInfo, status: str | None) -> tuple[str, list[str]]:
    """The run's CSV (report.csv_lines, the status filter applied) and its patients."""
    lines = csv_lines(store, run)
    kept = [next(lines)]
    column = CSV_HEAD.index("status")
    patients = []
    for line in lines:
        row = next(csv.reader([line]))
        if status is None or row[column] == status:
            kept.append(line)
            patients.append(row[1])
    return "".join(kept), patients


@router.get("/app/cohort")
async def cohort_page(
    request: Request,
    state: State,
    smart: Smart,
    request_id: RequestId,
    trial: str | None = None,
    status: str | None = None,
    as_of: str | None = None,
    fresh: str | None = None,
    sweep: str | None = None,
    ticket: str | None = None,
) -> Response:
    session, from_ticket = await page_session(request, smart, ticket)
    refused = _cohort_refusal(smart, session, request)
    if refused is not None:
        return refused
    assert session is not None
    try:
        chosen = _trial(state, trial)
        explicit = _day(as_of, state.settings) if as_of else None
        wanted = _status_filter(status)
        run, store = await _source(request, state, smart, session, chosen, explicit, fresh, sweep)
    except PageError as exc:
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    day = run.as_of if run is not None else explicit or today(state.settings)
    head = render(
        "cohort_start.html",
        title=f"{chosen.id} candidates",
        user=display_user(session.user, session.iss),
        nav_query=_nav(chosen, day),
        trial=chosen,
        as_of=day.isoformat(),
        iss=run.source if run is not None else session.iss,
        status=wanted,
        statuses=list(STATUS_LABEL.items()),
        fresh=run is None and _fresh(fresh),
        sweep=_sweep_note(run, chosen, wanted, explicit is not None) if run else None,
    )
    if run is not None and store is not None:
        chunks = _sweep_chunks(state, store, run, session, request_id, head, chosen, wanted)
    else:
        chunks = _cohort_chunks(state, smart, session, request_id, head, chosen, day, wanted)
    response = stream(chunks, smart.frame_ancestors())
    if from_ticket:
        set_session_cookie(response, request, smart, session.id)
    return response


async def _source(
    request: Request,
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    trial: TrialDefinition,
    as_of: dt.date | None,
    fresh: str | None,
    sweep: str | None,
) -> tuple[RunInfo | None, SweepStore | None]:
    """The sweep the cohort page and its CSV show, or (None, None): screen on demand."""
    sweep_id = _sweep_id(sweep)
    store = _sweep_store(request)
    if _fresh(fresh) or store is None:
        return None, None
    run = await asyncio.to_thread(
        _choose_sweep, store, state, smart, session, trial, as_of, sweep_id
    )
    return run, store


def _results_context(
    counts: dict[str, int],
    status: str | None,
    rows: list[dict[str, Any]],
    funnel_rows: list[FunnelRow],
    csv_query: dict[str, str],
    unscreened: list[dict[str, str]] | None = None,
    problems: Sequence[str] = (),
    errors: int = 0,
) -> dict[str, Any]:
    return {
        "counts": counts,
        "status": status,
        "status_label": STATUS_LABEL.get(status or "", ""),
        "shown": rows,
        "unscreened": unscreened or [],
        "problems": list(problems),
        "errors": errors,
        "funnel": funnel_rows,
        "csv_href": "/app/cohort.csv?" + urlencode(csv_query),
    }


async def _sweep_chunks(
    state: AppState,
    store: SweepStore,
    run: RunInfo,
    session: SmartSession,
    request_id: str,
    head: str,
    trial: TrialDefinition,
    status: str | None,
) -> AsyncIterator[str]:
    """The page head, then the sweep's ranked rows and funnel (nothing is screened)."""
    yield head
    outcome = "error"
    shown: list[str] = []
    try:
        stored = await asyncio.to_thread(_stored, store, run, trial, status)
        shown = [row["reference"] for row in stored.rows]
        outcome = f"sweep {run.id}: {run.counts['patients']} screened"
        query = {"trial": trial.id, "as_of": run.as_of.isoformat(), "sweep": str(run.id)}
        if status:
            query["status"] = status
        yield render(
            "cohort_results.html",
            **_results_context(
                run.counts,
                status,
                stored.rows,
                stored.funnel,
                query,
                problems=run.problems,
                errors=run.counts.get("errors", 0),
            ),
        )
    except ServiceError as exc:  # the run's results were purged since it was chosen
        outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=exc.message)
    except Exception:
        log.exception("cohort page failed reading sweep %d (request %s)", run.id, request_id)
        yield render(
            "cohort_failed.html",
            message=f"Something went wrong reading sweep #{run.id}; the request id is "
            f"{request_id}.",
        )
    finally:
        await _audit(state, request_id, session, "page.cohort", trial.id, shown, outcome)


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
        query["fresh"] = "1"  # the CSV screens on demand too, whatever sweep completes
        yield render(
            "cohort_results.html",
            **_results_context(
                _counts(screened.ranked),
                status,
                _rows(screened, status),
                funnel(trial, screened.ranked),
                query,
                unscreened=screened.unscreened,
            ),
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
        await _audit(
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
    fresh: str | None = None,
    sweep: str | None = None,
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
        explicit = _day(as_of, state.settings) if as_of else None
        wanted = _status_filter(status)
        run, store = await _source(request, state, smart, session, chosen, explicit, fresh, sweep)
        if run is not None and store is not None:
            # The same choice as the page: the sweep's CSV (report.csv_lines), filtered.
            body, patients = await asyncio.to_thread(_stored_csv, store, run, wanted)
            ids = [p.removeprefix("Patient/") for p in patients]
            outcome = f"sweep {run.id}: {run.counts['patients']} screened"
            filename = f"{chosen.id}-candidates-{run.as_of.isoformat()}-sweep-{run.id}.csv"
            return _csv_response(body, filename)
        day = explicit or today(state.settings)
        screened = await _screen(state, smart.fhir(session.iss), chosen, day, session.access_token)
        ids = screened.ids
        outcome = f"{len(screened.ranked)} screened"
    except PageError as exc:
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    except FhirError as exc:
        failure = _fhir_failure(exc, session.iss)
        outcome = f"error {exc.status}"
        return error_page(smart, failure.title, failure.message, failure.status, request_id)
    except ServiceError as exc:
        outcome = f"error {exc.status}"
        return error_page(smart, "Could not make the CSV", exc.message, exc.status, request_id)
    finally:
        if chosen is not None:
            await _audit(
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
    return _csv_response(candidates_csv(chosen, ranked), filename)


def _csv_response(body: str, filename: str) -> Response:
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
