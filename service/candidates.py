"""Screening a list of patients read from a FHIR server, with progress: one function for
POST /candidates and the coordinator page screened on demand.

- `candidate_ids`: the patients asked for: a list, a Group's members, or (with neither)
  every patient on the server. Every id follows the FHIR id rule (service/fhir/ids.py): a bad
  one asked for is 400; a Group member whose reference breaks it is skipped and logged by
  position (never sent to the server, never screened).
- `screen_patient`: one patient fetched and evaluated (the patient page).
- `screen_patients`: fetch and evaluate each, at most COHORT_MATCH_FHIR_CONCURRENCY at once,
  telling `progress` after each; a patient who cannot be fetched is listed as unscreened with
  why, never dropped silently. Returns them ranked (service/ranking.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from service.context import ScreenContext
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.errors import BadRequest, FhirError, FhirNotFound, NotFound
from service.fetching import fetch_patient
from service.fhir import FhirClient
from service.fhir.ids import InvalidFhirId, reference_id
from service.ranked_output import status_counts
from service.ranking import rank

__all__ = [
    "Progress",
    "Screened",
    "candidate_ids",
    "patient_id",
    "screen_patient",
    "screen_patients",
]

log = logging.getLogger(__name__)
Progress = Callable[[int, int], Awaitable[None]]  # patients done, of total


def patient_id(text: str) -> str:
    """The id of "Patient/<id>" or "<id>", by the FHIR id rule; BadRequest (400) otherwise."""
    try:
        return reference_id(text, "Patient")
    except InvalidFhirId as exc:
        raise BadRequest(str(exc)) from None


async def candidate_ids(
    fhir: FhirClient, patients: list[str] | None, group: str | None, token: str | None
) -> list[str]:
    """The ids to screen, each once, in the order asked."""
    if patients is not None:
        return list(dict.fromkeys(patient_id(p) for p in patients))
    if group is not None:
        try:
            group_id = reference_id(group, "Group")
        except InvalidFhirId as exc:
            raise BadRequest(str(exc)) from None
        try:
            found = await fhir.read("Group", group_id, token=token)
        except FhirNotFound as exc:
            raise NotFound(f"Group/{group_id} not found on the FHIR server") from exc
        members = [m.get("entity", {}).get("reference", "") for m in found.get("member") or ()]
        return list(dict.fromkeys(_member_ids(members)))
    return [str(p["id"]) async for p in fhir.search("Patient", {}, token=token) if p.get("id")]


def _member_ids(references: list[Any]) -> Iterator[str]:
    for index, reference in enumerate(references):
        if not isinstance(reference, str) or not reference.startswith("Patient/"):
            continue
        try:
            yield reference_id(reference, "Patient")
        except InvalidFhirId:
            log.warning("Group member %d: reference is not a FHIR id; skipped", index)


@dataclass(frozen=True)
class Screened:
    trial: TrialDefinition
    day: dt.date
    ids: list[str]  # every patient asked for
    ranked: list[PatientResult]  # those screened, best first
    unscreened: list[dict[str, str]]  # {"patient": ..., "reason": ...}
    resources: int  # read from the server
    errors: int  # patients not fetched, failed searches and unreadable records

    def counts(self) -> dict[str, int]:
        """Patients screened and how many of each status."""
        return status_counts(r.status for r in self.ranked)


async def screen_patients(
    context: ScreenContext,
    fhir: FhirClient,
    trial: TrialDefinition,
    ids: list[str],
    day: dt.date,
    token: str | None,
    progress: Progress | None = None,
) -> Screened:
    """Fetch and evaluate each patient of `ids` as of `day` (see the module docstring)."""
    gate = asyncio.Semaphore(context.settings.fhir_concurrency)
    errors = resources = done = 0
    unscreened: list[dict[str, str]] = []
    evaluate_ = partial(evaluate, mrn_type=context.settings.mrn_type)

    async def one(ident: str) -> PatientResult | None:
        nonlocal errors, resources, done
        try:
            async with gate:
                try:
                    fetched = await fetch_patient(
                        fhir,
                        ident,
                        context.plans[trial.id],
                        context.terms,
                        token=token,
                        tx=context.tx,
                    )
                except FhirError as exc:
                    errors += 1
                    unscreened.append({"patient": f"Patient/{ident}", "reason": exc.message})
                    log.warning("candidate Patient/%s not screened: %s", ident, type(exc).__name__)
                    return None
            resources += fetched.resources
            errors += len(fetched.facts.problems)  # failed searches and unreadable records
            return await context.off_loop(evaluate_, trial, fetched.facts, day, context.terms)
        finally:
            done += 1
            if progress is not None:
                await progress(done, len(ids))

    finished = await asyncio.gather(*(one(i) for i in ids))
    results = [r for r in finished if r is not None]
    return Screened(trial, day, ids, rank(results), unscreened, resources, errors)


async def screen_patient(
    context: ScreenContext,
    fhir: FhirClient,
    trial: TrialDefinition,
    ident: str,
    day: dt.date,
    token: str | None,
) -> PatientResult:
    """One patient fetched and evaluated as of `day` (FhirNotFound when there is none)."""
    fetched = await fetch_patient(
        fhir, ident, context.plans[trial.id], context.terms, token=token, tx=context.tx
    )
    return await context.off_loop(
        partial(evaluate, mrn_type=context.settings.mrn_type),
        trial,
        fetched.facts,
        day,
        context.terms,
    )
