"""One patient against every trial served: fetched once, every trial evaluated, best fit first.

- Fetch: one FHIR read of the patient with the union of every trial's fetch plan (the
  Observation codes and value sets any trial reads), so a criterion of one trial never goes
  `unknown` because the record was fetched for another.
- Order: the candidate list's own key (ranking.sort_key: status, score, fewer failed
  criteria), with the trial id last instead of the patient, so the same record always gives
  the same list. Every trial is listed; an ineligible one last, its next step saying why.
- Each row carries the trial's `next_step` (ranking.next_step), the text every channel shows.

Used by `GET /patients/{id}/trials` (service/api/patient_trials.py), the patient page's "other
trials" section and the CDS Hooks multi-trial card (service/cds/all_trials.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from service.context import ScreenContext
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult, Status
from service.errors import Unprocessable
from service.facts import PatientFacts
from service.fetching import fetch_patient
from service.fhir import FetchPlan, FhirClient
from service.ranking import sort_key
from service.terminology import Terminology

__all__ = ["EveryTrial", "TrialFit", "fit_every_trial", "screen_every_trial", "union_plan"]


@dataclass(frozen=True)
class TrialFit:
    """How one patient fits one trial: the row of the multi-trial list."""

    trial_id: str
    title: str
    version: str
    status: Status
    score: float
    fails: int
    next_step: str | None
    rank: int


@dataclass(frozen=True)
class EveryTrial:
    """The ordered rows, and each trial's full result (the patient page shows one of them)."""

    fits: list[TrialFit]
    results: dict[str, PatientResult]

    def may_fit(self) -> list[TrialFit]:
        """The trials the record does not rule out (likely or possibly eligible), best first."""
        return [f for f in self.fits if f.status != "ineligible"]


def union_plan(plans: Iterable[FetchPlan]) -> FetchPlan:
    """One fetch plan that reads what every plan reads."""
    plans = list(plans)
    codes = sorted({code for plan in plans for code in plan.observation_codes})
    types = list(dict.fromkeys(kind for plan in plans for kind in plan.other_types))
    return FetchPlan(
        observation_codes=tuple(codes),
        other_types=tuple(types),
        valuesets=frozenset().union(*(plan.valuesets for plan in plans)),
    )


def fit_every_trial(
    trials: Mapping[str, TrialDefinition],
    facts: PatientFacts,
    as_of: dt.date,
    terms: Terminology,
    *,
    mrn_type: str = "MR",
) -> EveryTrial:
    """Every trial evaluated on one patient's facts, ordered best fit first (CPU work)."""
    results = {
        trial_id: evaluate(trial, facts, as_of, terms, mrn_type=mrn_type)
        for trial_id, trial in trials.items()
    }
    rows = []
    for trial_id, result in results.items():
        trial = trials[trial_id]
        fails = sum(1 for c in result.criteria if c.verdict == "fail")
        rows.append((sort_key(result.status, result.score, fails, trial_id), trial, result, fails))
    rows.sort(key=lambda row: row[0])
    fits = [
        TrialFit(
            trial_id=trial.id,
            title=trial.title,
            version=trial.version,
            status=result.status,
            score=result.score,
            fails=fails,
            next_step=result.next_step,
            rank=position,
        )
        for position, (_, trial, result, fails) in enumerate(rows, start=1)
    ]
    return EveryTrial(fits, results)


async def screen_every_trial(
    context: ScreenContext,
    fhir: FhirClient,
    ident: str,
    day: dt.date,
    token: str | None,
) -> EveryTrial:
    """One patient fetched once (the union plan) and evaluated against every trial as of
    `day` (FhirNotFound when there is no such patient; Unprocessable for a `day` before the
    patient was born, as /match)."""
    fetched = await fetch_patient(
        fhir, ident, union_plan(context.plans.values()), context.terms, token=token, tx=context.tx
    )
    demographics = fetched.facts.demographics
    if demographics is not None and demographics.birth_date is not None:
        if day < demographics.birth_date:
            raise Unprocessable(f"as_of {day} is before Patient/{ident} was born")
    return await context.off_loop(
        partial(fit_every_trial, mrn_type=context.settings.mrn_type),
        context.trials,
        fetched.facts,
        day,
        context.terms,
    )
