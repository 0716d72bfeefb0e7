"""Fetch everything the trial needs about one patient, concurrently, and map it to facts.

A resource type whose fetch fails does not stop the others: it becomes a `Problem` for the
patient, and every criterion that would have relied on the absence of such records becomes
`unknown` (never pass or fail) with the failure as its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.criteria.model import TrialDefinition, valuesets_named
from service.errors import FhirError
from service.facts import PatientFacts, Problem
from service.fhir.client import FhirClient
from service.mappers import MappingError, map_resource, problem_for
from service.terminology import Terminology

__all__ = ["FetchPlan", "PatientFetch", "fetch_patient", "plan_for"]

log = logging.getLogger(__name__)
# How each type is searched by patient (FHIR R4 search parameters).
PATIENT_PARAM = {
    "Condition": "patient",
    "MedicationStatement": "patient",
    "MedicationRequest": "patient",
    "AllergyIntolerance": "patient",
    "Procedure": "patient",
    "ResearchSubject": "patient",
}
CODES_PER_QUERY = 60  # about 2.5 KB of URL: well under common 8 KB limits, few requests
OBSERVATION_KINDS = frozenset({"lab", "score", "grade"})


@dataclass(frozen=True)
class FetchPlan:
    """What to ask the FHIR server for: Observation codes (system|code) and other types."""

    observation_codes: tuple[str, ...]
    other_types: tuple[str, ...] = tuple(PATIENT_PARAM)

    def observation_queries(self) -> list[str]:
        codes = self.observation_codes
        return [
            ",".join(codes[i : i + CODES_PER_QUERY]) for i in range(0, len(codes), CODES_PER_QUERY)
        ]


def plan_for(trial: TrialDefinition, terms: Terminology) -> FetchPlan:
    """Observation codes of every lab/score/grade value set the trial names, plus the site's
    local codes mapped onto them, so the server returns only what criteria read."""
    wanted = {
        name for name in valuesets_named(trial) if terms.valuesets[name].kind in OBSERVATION_KINDS
    }
    codes = sorted(terms.codes_in(wanted))
    return FetchPlan(observation_codes=tuple(f"{system}|{code}" for system, code in codes))


@dataclass
class PatientFetch:
    facts: PatientFacts
    resources: int = 0
    problems: list[Problem] = field(default_factory=list)
    wait_s: float = 0.0  # wall time waiting for the FHIR server (all searches, concurrently)
    map_s: float = 0.0  # our own time mapping the resources to facts


async def fetch_patient(
    fhir: FhirClient,
    patient_id: str,
    plan: FetchPlan,
    terms: Terminology,
    *,
    token: str | None = None,
) -> PatientFetch:
    """Patient + every planned search, concurrently; failures become Problems."""
    reference = f"Patient/{patient_id}"
    tasks: dict[str, Any] = {"Patient": fhir.read("Patient", patient_id, token=token)}
    for index, codes in enumerate(plan.observation_queries()):
        tasks[f"Observation#{index}"] = fhir.search_all(
            "Observation", {"patient": reference, "code": codes}, token=token
        )
    for kind in plan.other_types:
        tasks[kind] = fhir.search_for_patient(kind, PATIENT_PARAM[kind], reference, token=token)
    started = time.perf_counter()
    outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
    waited = time.perf_counter()
    facts = PatientFacts(reference)
    fetch = PatientFetch(facts, wait_s=waited - started)
    for key, outcome in zip(tasks, outcomes, strict=True):
        kind = key.split("#")[0]
        if isinstance(outcome, FhirError) and kind == "Patient":
            # Without the Patient itself there is no one to screen: the request fails
            # (404 for an unknown patient, 502/504 for the server) instead of a result.
            raise outcome
        if isinstance(outcome, FhirError):
            problem = Problem(kind, outcome.url or kind, f"fetch failed: {outcome.message}")
            facts.add(problem)
            fetch.problems.append(problem)
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        resources = [outcome] if kind == "Patient" else outcome
        fetch.resources += len(resources)
        add_resources(facts, resources, terms)
    fetch.map_s = time.perf_counter() - waited
    log.info(
        "fetched %s: %d resources, %d failed searches",
        reference,
        fetch.resources,
        len(fetch.problems),
    )
    return fetch


def add_resources(
    facts: PatientFacts, resources: Iterable[dict[str, Any]], terms: Terminology
) -> None:
    """Map resources into `facts`; an unreadable one becomes a Problem, not an exception."""
    for resource in resources:
        where = f"{resource.get('resourceType')}/{resource.get('id')}"
        try:
            mapped = map_resource(resource, terms, where)
        except MappingError as exc:
            mapped = problem_for(resource, str(exc), where, terms)
        if mapped is not None and mapped.patient == facts.reference:
            facts.add(mapped.fact)
