"""The coordinator page's view model: ranked rows, the sweep note and the results block, from
a screen on demand (service/candidates.py) or from a stored sweep.

`stored` and `stored_csv` read a sweep's results from its store (blocking: call them in a
thread); every other function is pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from service.candidates import Screened
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientSummary
from service.ranked_output import csv_lines
from service.ranking import stored_next_step
from service.sweeps.report import attrition
from service.sweeps.store import RunInfo, SweepStore
from service.web.views import (
    STATUS_LABEL,
    FunnelRow,
    ehr_link,
    next_check,
    short_step,
    stored_funnel,
)

__all__ = [
    "Stored",
    "identity",
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
    patient: Mapping[str, Any],
    status: str,
    score: float,
    verdicts: Mapping[str, str],
    next_: str | None,
    ehr_url: str | None = None,
) -> dict[str, Any]:
    """One line of the ranked table. `patient` is the result's patient as the JSON contract
    has it (reference, name, mrn, age, sex; `identity` makes it from an engine result). The
    row's link opens the live checklist on the EHR, and `ehr_href` the patient's record in
    the EHR (COHORT_MATCH_EHR_PATIENT_URL, if set)."""
    reference = patient["reference"]
    query = {"id": reference.removeprefix("Patient/"), "trial": trial.id, "as_of": day.isoformat()}
    return {
        "rank": rank,
        "reference": reference,
        "href": "/app/patient?" + urlencode(query),
        "status": status,
        "status_label": STATUS_LABEL[status],
        "score": score,
        "age": patient.get("age"),
        "sex": patient.get("sex"),
        "mrn": patient.get("mrn"),
        "name": patient.get("name"),  # absent from results stored before names were kept
        "ehr_href": ehr_link(ehr_url, reference),
        "fails": sum(v == "fail" for v in verdicts.values()),
        "unknowns": sum(v == "unknown" for v in verdicts.values()),
        "next": next_,
        "verdicts": dict(verdicts),  # the screen a decision is weighed against (worklist.py)
    }


def identity(patient: PatientSummary) -> dict[str, Any]:
    """Who the patient is, as `row` reads it."""
    return {
        "reference": patient.reference,
        "name": patient.name,
        "mrn": patient.mrn,
        "age": patient.age,
        "sex": patient.sex,
    }


def rows(
    screened: Screened, status: str | None, ehr_url: str | None = None
) -> list[dict[str, Any]]:
    """The ranked rows of a screen on demand, the status filter applied."""
    return [
        row(
            screened.trial,
            screened.day,
            rank=result.rank,
            patient=identity(result.patient),
            status=result.status,
            score=result.score,
            verdicts=result.verdicts(),
            next_=next_check(result),
            ehr_url=ehr_url,
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
    worklist: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of cohort_results.html; `worklist`: the rows split into `fresh` and
    `held` and the decision `form` (service/web/worklist.py), else every row is new."""
    return {
        "fresh": shown,
        "held": [],
        "form": None,
        **(worklist or {}),
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


def stored(
    store: SweepStore,
    run: RunInfo,
    trial: TrialDefinition,
    status: str | None,
    ehr_url: str | None = None,
) -> Stored:
    """The run's ranked rows (the store filters by status) and its funnel (blocking)."""
    shown = []
    for body in store.results(run.id, status=status):
        result = orjson.loads(body)
        shown.append(
            row(
                trial,
                run.as_of,
                rank=result["rank"],
                patient=result["patient"],
                status=result["status"],
                score=result["score"],
                verdicts={c["id"]: c["verdict"] for c in result["criteria"]},
                next_=short_step(stored_next_step(result)),
                ehr_url=ehr_url,
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
