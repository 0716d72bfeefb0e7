"""Clinician pages, server-rendered (Jinja2), behind a SMART session (service/api/smart.py).

- `/app/patient[?id=&trial=&as_of=]`: one patient's checklist, grouped inclusion /
  exclusion, each verdict with its reason and evidence linked to the source resource on the
  EHR, the unknowns as "what to check next", and the status and score explained. Without
  `id`, the patient of the launch context. A session launched for one patient cannot open
  another.
- `/app/cohort?trial=[&status=&as_of=&fresh=1]`: ranked candidates, filtered by status, with
  the attrition funnel: from a stored sweep when one may be shown (service/web/sweep_choice.py
  decides which), saying "From sweep #N ... — screen now"; otherwise (or with `fresh=1`)
  screened on demand (service/candidates.py), the page streaming a progress line per batch.
  Needs a session with user-level scopes (a standalone launch as a practitioner).
- `POST /app/decisions`: a decision form of those pages (service/web/worklist.py): checks the
  form's CSRF token against the page session, records the decision as the API does
  (service/api/decisions.new_decision and record, its write-back included; who is the
  session's user), audited, then redirects back to the page (POST-redirect-GET). The cohort
  page lists patients with an open decision apart from the new candidates; the patient page
  shows the decisions for its trial and the state of the patient's ResearchSubject.
- `/app/cohort.csv?trial=[&status=&as_of=&fresh=1&sweep=N]`: the ranked list as
  `cohort-match screen --format csv` writes it, from the same source the page chose (the
  page's link names its sweep, so a sweep completing in between does not change it).
- `/app/report.csv?trial=[&from=&to=]`: the recruitment report the cohort page shows, as the
  API's CSV (service/worklist/report.report_csv; default the last 30 days), under the same
  session rules as the cohort page; audited (`page.report`) as the API's report is: counts
  only, no patient.

On demand, data comes from the EHR's FHIR server (the session's `iss`) with the session's
access token. The view models are service/web/ (cohort.py, patient.py, views.py). Patient
links always open the live checklist on the EHR. Every call writes one audit row (the
`audited` dependency). Errors are plain sentences on the page; never a stack trace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from service.all_trials import screen_every_trial
from service.api.decisions import new_decision, record
from service.api.deps import Audit, RequestId, audited
from service.api.report import make_report
from service.api.smart import Smart, error_page, page_session, set_session_cookie, signin_page
from service.api.state import State
from service.app_state import AppState
from service.as_of import check_as_of
from service.audit import AuditEntry
from service.candidates import (
    Screened,
    candidate_ids,
    patient_id,
    screen_patients,
)
from service.criteria.model import TrialDefinition
from service.errors import (
    BadRequest,
    CohortMatchError,
    FhirAuthError,
    FhirError,
    FhirNotFound,
    NotFound,
    ServiceError,
    Unprocessable,
)
from service.smart import SmartRuntime, SmartSession
from service.smart.runtime import user_level
from service.sweeps.store import RunInfo
from service.web import render, stylesheet
from service.web.cohort import (
    nav_query,
    results_context,
    rows,
    stored,
    stored_csv,
    sweep_note,
)
from service.web.other_trials import other_trials_context
from service.web.patient import patient_context
from service.web.report import report_view
from service.web.responses import html, stream
from service.web.sweep_choice import Wanted, named_fits, newest
from service.web.views import STATUS_LABEL, candidates_csv, display_user, funnel
from service.web.worklist import (
    csrf_ok,
    form_context,
    history_view,
    safe_back,
    split,
    subject_view,
)
from service.worklist.report import report_csv, report_period
from service.worklist.research_subject import subject_id
from service.worklist.schemas import DecisionCreate

router = APIRouter(tags=["pages"], include_in_schema=False)
log = logging.getLogger(__name__)
SWEEPS_LOOKED_AT = 50  # newest runs of the trial searched for one the cohort page can show


class PageError(CohortMatchError):
    """A refusal shown to the user as a page: a title, a plain sentence and a status."""

    def __init__(self, title: str, message: str, status: int) -> None:
        super().__init__(message)
        self.title = title
        self.message = message
        self.status = status


def _trial(state: AppState, trial_id: str | None) -> TrialDefinition:
    wanted = trial_id or state.settings.smart_trial or min(state.trials, default=None)
    trial = state.trials.get(wanted) if wanted else None
    if trial is None:
        raise PageError("Unknown trial", f"cohort-match does not serve a trial {wanted!r}.", 404)
    return trial


def _day(as_of: str | None, state: AppState) -> dt.date:
    if not as_of:
        return state.today()
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


def _signed_in(audit: AuditEntry, smart: SmartRuntime, session: SmartSession) -> None:
    audit.subject, audit.client_id = session.user, smart.settings.smart_client_id


def _refused(audit: AuditEntry, response: Response) -> Response:
    audit.outcome = f"error {response.status_code}"
    return response


def _here(request: Request) -> str:
    """This page's path and query without the one-time ticket (for sign-in links)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "ticket"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


@router.get("/app/static/app.css")
async def css() -> Response:
    return Response(
        stylesheet(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


# ---------------------------------------------------------------- the patient page
@router.get("/app/patient", dependencies=[audited("page.patient")])
async def patient_page(
    request: Request,
    state: State,
    smart: Smart,
    audit: Audit,
    request_id: RequestId,
    id: str | None = None,  # the query parameter's name, as in FHIR's _id
    trial: str | None = None,
    as_of: str | None = None,
    ticket: str | None = None,
) -> Response:
    session, from_ticket = await page_session(request, smart, ticket)
    if session is None:
        return _refused(
            audit,
            signin_page(
                smart,
                _here(request),
                "Open cohort-match from a patient's chart in the EHR, or sign in here.",
            ),
        )
    _signed_in(audit, smart, session)
    response: Response
    try:
        body = await _patient_body(state, smart, session, audit, id, trial, as_of, _here(request))
        response = html(body, smart.frame_ancestors())
    except PageError as exc:
        if audit.outcome == "error":  # else the EHR's own status, set where it failed
            audit.outcome = f"error {exc.status}"
        response = error_page(smart, exc.title, exc.message, exc.status, request_id)
    if from_ticket:
        set_session_cookie(response, request, smart, session.id)
    return response


async def _patient_body(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    audit: AuditEntry,
    ident: str | None,
    trial_id: str | None,
    as_of: str | None,
    back: str,
) -> str:
    trial = _trial(state, trial_id)
    audit.trial_id = trial.id
    day = _day(as_of, state)
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
    audit.patients = [reference]
    fhir = smart.fhir(session.iss)
    try:
        # Both requests run to the end (no orphaned request when one fails); the screen's
        # error, if any, is the one reported. The Patient read is only for the banner.
        # Every trial is screened on the one fetch: the page shows this trial's checklist and
        # lists the others the patient may fit (service/all_trials.py).
        every, resource = await asyncio.gather(
            screen_every_trial(state, fhir, wanted, day, session.access_token),
            fhir.read("Patient", wanted, token=session.access_token),
            return_exceptions=True,
        )
        if isinstance(every, BaseException):
            raise every
        result = every.results[trial.id]
    except Unprocessable as exc:
        raise PageError("Date before birth", exc.message, 422) from None
    except FhirNotFound:
        raise PageError(
            "Patient not found", f"{reference} was not found on {session.iss}.", 404
        ) from None
    except FhirError as exc:
        audit.outcome = f"error {exc.status}"
        raise _fhir_failure(exc, session.iss) from None
    audit.outcome = result.status
    history = await asyncio.to_thread(state.decisions.history, trial.id, reference)
    subject = await asyncio.to_thread(state.subjects.get, trial.id, reference)
    context = patient_context(
        trial,
        day,
        result,
        None if isinstance(resource, BaseException) else resource,
        user=session.user,
        iss=session.iss,
        show_banner=session.need_patient_banner,
        ehr_url=state.settings.ehr_patient_url,
    )
    return render(
        "patient.html",
        **context,
        **other_trials_context(every, trial.id, wanted, day),
        decisions=history_view(history),
        research_subject=subject_view(
            subject, f"ResearchSubject/{subject_id(trial.id, reference)}"
        ),
        form=form_context(trial, session.id, back, state.today()),
    )


# ---------------------------------------------------------------- the cohort page
def _cohort_signed_in(
    audit: AuditEntry, smart: SmartRuntime, session: SmartSession | None, request: Request
) -> SmartSession | Response:
    """The session, recorded as the audit row's subject, when it is fit for the cohort page;
    else the refusal to send (its outcome recorded)."""
    refused = _cohort_refusal(smart, session, request)
    if refused is not None:
        return _refused(audit, refused)
    assert session is not None
    _signed_in(audit, smart, session)
    return session


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
    if not user_level(session):
        return signin_page(
            smart,
            _here(request),
            "This session was opened for a single patient. Sign in as a practitioner to see "
            "the cohort.",
            status=403,
        )
    return None


def _status_filter(status: str | None) -> str | None:
    if not status:
        return None
    if status not in STATUS_LABEL:
        raise PageError("Unknown status", f"status must be one of {', '.join(STATUS_LABEL)}.", 400)
    return status


def _fresh(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _sweep_id(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PageError("Bad sweep", f"sweep must be a run number, not {value!r}.", 400) from None


async def _source(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    trial: TrialDefinition,
    as_of: dt.date | None,
    fresh: str | None,
    sweep: str | None,
) -> RunInfo | None:
    """The sweep the cohort page and its CSV show (service/web/sweep_choice.py), or None:
    screen on demand."""
    sweep_id = _sweep_id(sweep)
    if _fresh(fresh):
        return None
    wanted = Wanted(
        trial_id=trial.id,
        trial_version=trial.version,
        terminology_version=state.terms.version,
        iss=session.iss,
        issuers=smart.issuers,
        configured=state.settings.fhir_base_url,
        as_of=as_of,
    )
    store = state.sweeps.store
    if sweep_id is not None:
        try:
            run: RunInfo | None = await asyncio.to_thread(store.get, sweep_id)
        except NotFound:
            run = None
        if run is None or not named_fits(run, wanted):
            raise PageError(
                "Sweep not available",
                f"Sweep #{sweep_id} of {trial.id} cannot be shown here (its results may have "
                "been replaced by newer runs). Open the cohort page again.",
                409,
            )
        return run
    try:
        runs = await asyncio.to_thread(store.runs, trial.id, SWEEPS_LOOKED_AT)
    except SQLAlchemyError:  # the store is down: screening on demand still works
        log.warning("cohort page: could not read sweep runs; screening on demand", exc_info=True)
        return None
    return newest(runs, wanted)


async def _screen(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    trial: TrialDefinition,
    day: dt.date,
    audit: AuditEntry,
    progress: asyncio.Queue[str] | None = None,
) -> Screened:
    """Every patient on the EHR's server, screened and ranked; a progress line for every
    batch of COHORT_MATCH_FHIR_CONCURRENCY x 4 patients."""
    fhir, token = smart.fhir(session.iss), session.access_token
    ids = await candidate_ids(fhir, None, None, token)
    audit.patients = [f"Patient/{i}" for i in ids]
    batch = max(1, state.settings.fhir_concurrency * 4)

    async def report(done: int, total: int) -> None:
        if progress is not None and done % batch == 0 and done < total:
            await progress.put(f"Screened {done} of {total} patients…")

    if progress is not None:
        await progress.put(f"Screening {len(ids)} patients…")
    return await screen_patients(state, fhir, trial, ids, day, token, report)


@router.get("/app/cohort", dependencies=[audited("page.cohort", until_sent=True)])
async def cohort_page(
    request: Request,
    state: State,
    smart: Smart,
    audit: Audit,
    request_id: RequestId,
    trial: str | None = None,
    status: str | None = None,
    as_of: str | None = None,
    fresh: str | None = None,
    sweep: str | None = None,
    ticket: str | None = None,
) -> Response:
    session, from_ticket = await page_session(request, smart, ticket)
    signed = _cohort_signed_in(audit, smart, session, request)
    if isinstance(signed, Response):
        return signed
    session = signed
    try:
        chosen = _trial(state, trial)
        audit.trial_id = chosen.id
        explicit = _day(as_of, state) if as_of else None
        wanted = _status_filter(status)
        run = await _source(state, smart, session, chosen, explicit, fresh, sweep)
    except PageError as exc:
        audit.outcome = f"error {exc.status}"
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    day = run.as_of if run is not None else explicit or state.today()
    head = render(
        "cohort_start.html",
        title=f"{chosen.id} candidates",
        user=display_user(session.user, session.iss),
        nav_query=nav_query(chosen, day),
        trial=chosen,
        as_of=day.isoformat(),
        iss=run.source if run is not None else session.iss,
        status=wanted,
        statuses=list(STATUS_LABEL.items()),
        fresh=run is None and _fresh(fresh),
        sweep=sweep_note(run, chosen, wanted, explicit is not None) if run else None,
    )
    form = form_context(chosen, session.id, _here(request), state.today())
    if run is not None:
        chunks = _sweep_chunks(state, run, audit, request_id, head, chosen, wanted, form)
    else:
        chunks = _cohort_chunks(
            state, smart, session, audit, request_id, head, chosen, day, wanted, form
        )
    response = stream(chunks, smart.frame_ancestors())
    if from_ticket:
        set_session_cookie(response, request, smart, session.id)
    return response


async def _sweep_chunks(
    state: AppState,
    run: RunInfo,
    audit: AuditEntry,
    request_id: str,
    head: str,
    trial: TrialDefinition,
    status: str | None,
    form: dict[str, Any],
) -> AsyncIterator[str]:
    """The page head, then the sweep's ranked rows and funnel (nothing is screened)."""
    yield head
    try:
        shown = await asyncio.to_thread(
            stored, state.sweeps.store, run, trial, status, state.settings.ehr_patient_url
        )
        audit.patients = [line["reference"] for line in shown.rows]
        audit.outcome = f"sweep {run.id}: {run.counts['patients']} screened"
        query = {"trial": trial.id, "as_of": run.as_of.isoformat(), "sweep": str(run.id)}
        if status:
            query["status"] = status
        yield render(
            "cohort_results.html",
            **results_context(
                run.counts,
                status,
                shown.rows,
                shown.funnel,
                query,
                problems=run.problems,
                errors=run.counts.get("errors", 0),
                worklist=await _worklist(state, trial, run.as_of, shown.rows, form),
            ),
            report=await _report(state, trial),
        )
    except ServiceError as exc:  # the run's results were purged since it was chosen
        audit.outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=exc.message)
    except Exception:
        log.exception("cohort page failed reading sweep %d (request %s)", run.id, request_id)
        yield render(
            "cohort_failed.html",
            message=f"Something went wrong reading sweep #{run.id}; the request id is "
            f"{request_id}.",
        )


async def _cohort_chunks(
    state: AppState,
    smart: SmartRuntime,
    session: SmartSession,
    audit: AuditEntry,
    request_id: str,
    head: str,
    trial: TrialDefinition,
    day: dt.date,
    status: str | None,
    form: dict[str, Any],
) -> AsyncIterator[str]:
    """The page head at once, then a progress line per batch, then the results."""
    yield head
    progress: asyncio.Queue[str] = asyncio.Queue()
    work = asyncio.create_task(_screen(state, smart, session, trial, day, audit, progress))
    while not work.done():
        waiter = asyncio.create_task(progress.get())
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            yield f"<p>{waiter.result()}</p>\n"
        else:
            waiter.cancel()
    try:
        screened = work.result()
        audit.outcome = f"{len(screened.ranked)} screened"
        query = {"trial": trial.id, "as_of": day.isoformat()}
        if status:
            query["status"] = status
        query["fresh"] = "1"  # the CSV screens on demand too, whatever sweep completes
        shown = rows(screened, status, state.settings.ehr_patient_url)
        yield render(
            "cohort_results.html",
            **results_context(
                screened.counts(),
                status,
                shown,
                funnel(trial, screened.ranked),
                query,
                unscreened=screened.unscreened,
                worklist=await _worklist(state, trial, day, shown, form),
            ),
            report=await _report(state, trial),
        )
    except FhirError as exc:
        audit.outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=_fhir_failure(exc, session.iss).message)
    except ServiceError as exc:
        audit.outcome = f"error {exc.status}"
        yield render("cohort_failed.html", message=exc.message)
    except Exception:
        log.exception("cohort page failed (request %s)", request_id)
        yield render(
            "cohort_failed.html",
            message=f"Something went wrong while screening; the request id is {request_id}.",
        )


async def _worklist(
    state: AppState,
    trial: TrialDefinition,
    day: dt.date,
    shown: list[dict[str, Any]],
    form: dict[str, Any],
) -> dict[str, Any]:
    """The rows split into new candidates and those held by an open decision on `day`, each
    weighed against the screen the row shows (service/web/worklist.split)."""
    histories = await asyncio.to_thread(state.decisions.by_patient, trial.id)
    fresh, held = split(shown, histories, day)
    return {"fresh": fresh, "held": held, "form": form}


async def _report(state: AppState, trial: TrialDefinition) -> dict[str, Any] | None:
    """The trial's recruitment report for the last 30 days (as the API's default period),
    laid out for the page with its CSV link; None, and the section left out, when the stores
    cannot be read."""
    start, end = report_period(None, None, state.today())
    try:
        made = await asyncio.to_thread(make_report, state, trial.id, start, end)
    except SQLAlchemyError:
        log.warning("cohort page: could not read the stores for the report", exc_info=True)
        return None
    query = {"trial": trial.id, "from": start.isoformat(), "to": end.isoformat()}
    return report_view(made) | {"csv_href": "/app/report.csv?" + urlencode(query)}


def _report_day(value: str | None, name: str) -> dt.date | None:
    """A date of the report's period, checked as the API checks it (service/as_of.py)."""
    if not value:
        return None
    try:
        return check_as_of(dt.date.fromisoformat(value))
    except ValueError:
        message = f"{name} must be a date YYYY-MM-DD in range, not {value!r}."
        raise PageError("Bad date", message, 400) from None


@router.get("/app/report.csv", dependencies=[audited("page.report")])
async def report_csv_page(
    request: Request,
    state: State,
    smart: Smart,
    audit: Audit,
    request_id: RequestId,
    trial: str | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
) -> Response:
    """The recruitment report as CSV, from the page session (the cohort page's link)."""
    session, _ = await page_session(request, smart, None)
    signed = _cohort_signed_in(audit, smart, session, request)
    if isinstance(signed, Response):
        return signed
    session = signed
    try:
        chosen = _trial(state, trial)
        audit.trial_id = chosen.id
        asked = (_report_day(start, "from"), _report_day(end, "to"))
        try:
            first, last = report_period(*asked, state.today())
        except ValueError as exc:
            raise PageError("Bad period", f"{str(exc).capitalize()}.", 422) from None
        made = await asyncio.to_thread(make_report, state, chosen.id, first, last)
    except PageError as exc:
        audit.outcome = f"error {exc.status}"
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    audit.outcome = f"report {first}..{last}"
    return _csv_response(report_csv(made), f"{chosen.id}-report-{first}-{last}.csv")


# ---------------------------------------------------------------- decision forms
FORM_MAX_BYTES = 16 * 1024  # a note is at most 2,000 characters


def _form_fields(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, blank fields left out."""
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), max_num_fields=20)
    return {key: value.strip() for key, value in pairs if value.strip()}


def _decision_body(fields: dict[str, str]) -> DecisionCreate:
    """The form's decision. The form offers every field on every row: `criterion` counts only
    with screen-failed and `until` only with not-now, as the API requires."""
    state = fields.get("state", "")
    try:
        return DecisionCreate.model_validate(
            {
                "state": state,
                "note": fields.get("note"),
                "criterion": fields.get("criterion") if state == "screen_failed" else None,
                "until": fields.get("until") if state == "not_now" else None,
            }
        )
    except ValidationError as exc:
        if state == "screen_failed" and not fields.get("criterion"):
            message = "A screen-failed decision needs the criterion the patient failed."
        elif state == "not_now" and not fields.get("until"):
            message = "A not-now decision needs the date the patient returns."
        else:
            message = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
            )
        raise PageError("The decision was not recorded", message, 422) from None


@router.post("/app/decisions", dependencies=[audited("page.decision")])
async def decision_form(
    request: Request, state: State, smart: Smart, audit: Audit, request_id: RequestId
) -> Response:
    """Record a decision from a page's form, then back to the page (303)."""
    session, _ = await page_session(request, smart, None)
    if session is None:
        return _refused(
            audit,
            signin_page(
                smart,
                "/app/cohort",
                "Your session has ended; sign in again, then record the decision.",
            ),
        )
    _signed_in(audit, smart, session)
    body = await request.body()
    fields = _form_fields(body[:FORM_MAX_BYTES])
    try:
        if len(body) > FORM_MAX_BYTES or not csrf_ok(session.id, fields.get("csrf")):
            raise PageError(
                "The form has expired",
                "This form was not issued to your current session. Open the page again and "
                "record the decision there; nothing was recorded.",
                403,
            )
        trial = _trial(state, fields.get("trial"))
        audit.trial_id = trial.id
        try:
            wanted = patient_id(fields.get("patient", "").removeprefix("Patient/"))
        except BadRequest as exc:
            raise PageError("Not a patient", exc.message, 400) from None
        if session.patient is not None and wanted != session.patient:
            raise PageError(
                "Another patient",
                f"This session was opened for Patient/{session.patient}; it cannot record "
                "decisions for other patients.",
                403,
            )
        reference = f"Patient/{wanted}"
        audit.patients = [reference]
        try:
            decision = await new_decision(
                state,
                trial,
                reference,
                _decision_body(fields),
                subject=session.user,
                client_id=smart.settings.smart_client_id,
            )
        except Unprocessable as exc:
            raise PageError("The decision was not recorded", exc.message, 422) from None
    except PageError as exc:
        audit.outcome = f"error {exc.status}"
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    audit.outcome = f"recorded {decision.state}"
    await audit.write_now()  # stored only once the audit row is in, as the API does
    # Stored, then written back (the patient page shows how that went).
    await record(state, trial, decision)
    default = "/app/cohort?" + urlencode({"trial": trial.id})
    return RedirectResponse(safe_back(fields.get("back"), default), status_code=303)


@router.get("/app/cohort.csv", dependencies=[audited("page.cohort.csv")])
async def cohort_csv(
    request: Request,
    state: State,
    smart: Smart,
    audit: Audit,
    request_id: RequestId,
    trial: str | None = None,
    status: str | None = None,
    as_of: str | None = None,
    fresh: str | None = None,
    sweep: str | None = None,
) -> Response:
    session, _ = await page_session(request, smart, None)
    signed = _cohort_signed_in(audit, smart, session, request)
    if isinstance(signed, Response):
        return signed
    session = signed
    try:
        chosen = _trial(state, trial)
        audit.trial_id = chosen.id
        explicit = _day(as_of, state) if as_of else None
        wanted = _status_filter(status)
        run = await _source(state, smart, session, chosen, explicit, fresh, sweep)
        if run is not None:
            # The same choice as the page: the sweep's CSV, filtered by status in the store.
            body, patients = await asyncio.to_thread(stored_csv, state.sweeps.store, run, wanted)
            audit.patients = patients
            audit.outcome = f"sweep {run.id}: {run.counts['patients']} screened"
            filename = f"{chosen.id}-candidates-{run.as_of.isoformat()}-sweep-{run.id}.csv"
            return _csv_response(body, filename)
        day = explicit or state.today()
        screened = await _screen(state, smart, session, chosen, day, audit)
        audit.outcome = f"{len(screened.ranked)} screened"
    except PageError as exc:
        audit.outcome = f"error {exc.status}"
        return error_page(smart, exc.title, exc.message, exc.status, request_id)
    except FhirError as exc:
        failure = _fhir_failure(exc, session.iss)
        audit.outcome = f"error {exc.status}"
        return error_page(smart, failure.title, failure.message, failure.status, request_id)
    except ServiceError as exc:
        audit.outcome = f"error {exc.status}"
        return error_page(smart, "Could not make the CSV", exc.message, exc.status, request_id)
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
