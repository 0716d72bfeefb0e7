"""The recruitment report of a trial (service/worklist/report.py makes it).

    GET /trials/{trial_id}/report?from=&to=&format=json|csv

Scope `cohort-match/decisions.read`; audited as `report`. The report holds counts only, no
patient. `from` and `to` are dates in the configured zone, both inclusive; `to` defaults to
today and `from` to 29 days before `to` (the last 30 days).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from service.api.decisions import READ
from service.api.deps import Audit, audited, scoped
from service.api.state import State
from service.app_state import AppState
from service.as_of import AsOf
from service.errors import Unprocessable
from service.security import Principal
from service.worklist.report import (
    RecruitmentReport,
    SweepSummary,
    recruitment_report,
    report_csv,
    report_period,
)
from service.worklist.schemas import RecruitmentReportPublic

__all__ = ["make_report", "router"]

router = APIRouter(tags=["worklist"])
ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The report (JSON, or CSV on request)"},
    **{
        code: {"description": text, "content": {"application/fhir+json": {}}}
        for code, text in {
            401: "No or invalid bearer token",
            403: "Token lacks the scope",
            404: "Unknown trial",
            422: "A date that is not one, or a period that ends before it starts",
            503: "The call could not be audited",
        }.items()
    },
}


def _summaries(state: AppState, trial_id: str, start: dt.date, end: dt.date) -> list[SweepSummary]:
    # A day wider on each side than the period in the zone: the report picks the exact days.
    zone = state.clock.zone
    since = dt.datetime.combine(start - dt.timedelta(days=1), dt.time.min, zone)
    before = dt.datetime.combine(end + dt.timedelta(days=2), dt.time.min, zone)
    return [
        SweepSummary(
            run.id,
            run.ended_at,
            run.counts["patients"],
            run.counts["likely_eligible"],
            run.counts["possibly_eligible"],
        )
        for run in state.sweeps.store.completed_between(trial_id, since, before)
        if run.ended_at is not None
    ]


def make_report(state: AppState, trial_id: str, start: dt.date, end: dt.date) -> RecruitmentReport:
    """The trial's report for the period from the stores (blocking): the one way the API and
    the pages make it."""
    decisions = [d for history in state.decisions.by_patient(trial_id).values() for d in history]
    sweeps = _summaries(state, trial_id, start, end)
    return recruitment_report(trial_id, start, end, decisions, sweeps, state.clock.zone)


@router.get(
    "/trials/{trial_id}/report",
    summary="The recruitment report",
    response_model=RecruitmentReportPublic,
    responses=ERRORS,
    dependencies=[audited("report")],
)
async def trial_report(
    trial_id: str,
    state: State,
    _caller: Annotated[Principal, Depends(scoped(READ))],
    audit: Audit,
    start: Annotated[
        AsOf | None, Query(alias="from", description="First day (default: 29 days before to)")
    ] = None,
    end: Annotated[AsOf | None, Query(alias="to", description="Last day (default: today)")] = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Any:
    """Per trial and period: screened by the engine, candidates, reviewed, and the patients
    under each decision state (their latest in the period), screen failures by criterion."""
    state.trial(trial_id)
    try:
        first, last = report_period(start, end, state.today())
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    report = await asyncio.to_thread(make_report, state, trial_id, first, last)
    audit.outcome = f"report {first}..{last}"
    if output == "csv":
        filename = f"{trial_id}-report-{first}-{last}.csv"
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
            },
        )
    return RecruitmentReportPublic.of(report)
