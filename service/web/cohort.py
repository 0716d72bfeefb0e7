"""The coordinator page's view model: ranked rows, the sweep note and the results block, from
a screen on demand (service/candidates.py) or from a stored sweep.

`stored` and `stored_csv` read a sweep's results from its store (blocking: call them in a
thread); every other function is pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from service.candidates import Screened
from service.criteria.model import TrialDefinition
from service.ranked_output import csv_lines
from service.ranking import stored_next_step
from service.sweeps.report import attrition
from service.sweeps.store import RunInfo, SweepStore
from service.web.views import STATUS_LABEL, FunnelRow, next_check, short_step, stored_funnel

__all__ = [
    "Stored",
    "nav_query",
    "results_context",
    "row",
    "rows",
    "stored",
    "stored_csv",
    "sweep_note",
]


def nav_query(trial: TrialDefinition, day: dt.date) -> str:
    """The query the navigation links carry (trial and as_of)."""
    return "?" + urlencode({"trial": trial.id, "as_of": day.isoformat()})


def row(
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


def rows(screened: Screened, status: str | None) -> list[dict[str, Any]]:
    """The ranked rows of a screen on demand, the status filter applied."""
    return [
        row(
            screened.trial,
            screened.day,
            rank=result.rank,
            reference=result.patient.reference,
            status=result.status,
            score=result.score,
            age=result.patient.age,
            sex=result.patient.sex,
            verdicts=[c.verdict for c in result.criteria],
            next_=next_check(result),
            mrn=result.patient.mrn,
        )
        for result in screened.ranked
        if status is None or result.status == status
    ]


def sweep_note(
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


def results_context(
    counts: dict[str, int],
    status: str | None,
    shown: list[dict[str, Any]],
    funnel_rows: list[FunnelRow],
    csv_query: dict[str, str],
    unscreened: list[dict[str, str]] | None = None,
    problems: Sequence[str] = (),
    errors: int = 0,
) -> dict[str, Any]:
    """The context of cohort_results.html."""
    return {
        "counts": counts,
        "status": status,
        "status_label": STATUS_LABEL.get(status or "", ""),
        "shown": shown,
        "unscreened": unscreened or [],
        "problems": list(problems),
        "errors": errors,
        "funnel": funnel_rows,
        "csv_href": "/app/cohort.csv?" + urlencode(csv_query),
    }


@dataclass(frozen=True)
class Stored:
    """What the cohort page shows of a sweep."""

    rows: list[dict[str, Any]]
    funnel: list[FunnelRow]


def stored(store: SweepStore, run: RunInfo, trial: TrialDefinition, status: str | None) -> Stored:
    """The run's ranked rows (the store filters by status) and its funnel (blocking)."""
    shown = []
    for body in store.results(run.id, status=status):
        result = orjson.loads(body)
        patient = result["patient"]
        shown.append(
            row(
                trial,
                run.as_of,
                rank=result["rank"],
                reference=patient["reference"],
                status=result["status"],
                score=result["score"],
                age=patient["age"],
                sex=patient["sex"],
                verdicts=[c["verdict"] for c in result["criteria"]],
                next_=short_step(stored_next_step(result)),
                mrn=patient.get("mrn"),
            )
        )
    return Stored(shown, stored_funnel(attrition(store, run)))


def stored_csv(store: SweepStore, run: RunInfo, status: str | None) -> tuple[str, list[str]]:
    """The run's CSV (service/ranked_output.csv_lines; the store filters by status) and the
    patients it names."""
    patients: list[str] = []

    def results() -> Iterator[dict[str, Any]]:
        for body in store.results(run.id, status=status):
            result = orjson.loads(body)
            patients.append(result["patient"]["reference"])
            yield result

    return "".join(csv_lines(run.criterion_ids, results())), patients
