"""Between a trial and the FHIR client: what to fetch for a trial, and turning what was
fetched into facts. service/fhir/ knows HTTP and FHIR only; this module knows trials, code
tables and mappers.

    plan_for(trial, terms)                  the FetchPlan of a trial (service/fhir/plan.py)
    fetch_patient(fhir, id, plan, terms)    fetch (service/fhir/patient.py) and map to facts
    map_records(facts, resources, terms)    ask the terminology server, then map

A resource type whose fetch fails becomes a `Problem` for the patient, and every criterion
that would have relied on the absence of such records becomes `unknown` (never pass or fail)
with the failure as its reason.

Between fetching and mapping, every path (this fetch, a Bundle posted to /match, CDS Hooks)
calls `map_records`, which first asks the optional terminology server about codes the tables
do not know (service/vocab/runtime.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.criteria.model import TrialDefinition, valuesets_named
from service.facts import PatientFacts, Problem
from service.fhir.client import FhirClient
from service.fhir.patient import fetch_records
from service.fhir.plan import FetchPlan
from service.fhir.responses import without_query
from service.mappers import subject_of
from service.patient_screen import add_records
from service.terminology import Terminology

if TYPE_CHECKING:
    from service.vocab.runtime import RuntimeTerminology

__all__ = [
    "PatientFetch",
    "add_resources",
    "consult_terminology",
    "fetch_patient",
    "map_records",
    "plan_for",
]

log = logging.getLogger(__name__)
OBSERVATION_KINDS = frozenset({"lab", "score", "grade"})


def plan_for(trial: TrialDefinition, terms: Terminology) -> FetchPlan:
    """Observation codes of every lab/score/grade value set the trial names, plus the site's
    local codes mapped onto them, so the server returns only what criteria read."""
    wanted = {
        name for name in valuesets_named(trial) if terms.valuesets[name].kind in OBSERVATION_KINDS
    }
    codes = sorted(terms.codes_in(wanted))
    return FetchPlan(
        observation_codes=tuple(f"{system}|{code}" for system, code in codes),
        valuesets=frozenset(valuesets_named(trial)),
    )


@dataclass
class PatientFetch:
    facts: PatientFacts
    resources: int = 0
    problems: list[Problem] = field(default_factory=list)
    wait_s: float = 0.0  # wall time waiting for the FHIR server (all searches, concurrently)
    map_s: float = 0.0  # our own time mapping the resources to facts


def _short(message: str, url: str | None, limit: int = 300) -> str:
    """A failure's message with the search URL it quotes cut to its path (a chunk of codes
    makes it kilobytes long), and at most `limit` characters."""
    message = without_query(message, url)
    return message if len(message) <= limit else f"{message[: limit - 3]}..."


async def fetch_patient(
    fhir: FhirClient,
    patient_id: str,
    plan: FetchPlan,
    terms: Terminology,
    *,
    token: str | None = None,
    tx: RuntimeTerminology | None = None,
) -> PatientFetch:
    """Patient + every planned search, in one batch or concurrently; failures become
    Problems. With `tx`, unknown codes are asked about before mapping (`map_records`)."""
    records = await fetch_records(fhir, patient_id, plan, token=token)
    mapping = time.perf_counter()
    facts = PatientFacts(records.reference)
    fetch = PatientFetch(facts, resources=len(records.resources), wait_s=records.wait_s)
    for kind, error in records.failures:
        # Named by the search, not its URL: a chunk of 60 codes is kilobytes long.
        message = _short(error.message, error.url)
        problem = Problem(kind, f"{kind} search", f"fetch failed: {message}")
        facts.add(problem)
        fetch.problems.append(problem)
    fetch.problems += await map_records(
        facts, records.resources, terms, tx=tx, wanted=plan.valuesets
    )
    fetch.map_s = time.perf_counter() - mapping
    log.info(
        "fetched %s: %d resources, %d failed searches",
        records.reference,
        fetch.resources,
        len(fetch.problems),
    )
    return fetch


async def map_records(
    facts: PatientFacts,
    resources: list[dict[str, Any]],
    terms: Terminology,
    *,
    tx: RuntimeTerminology | None = None,
    wanted: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Ask the terminology server (when one is configured) about the records' codes the
    tables do not know, then map the records into `facts`. Returns the Problems added for
    records the server could not classify (already in `facts`)."""
    problems = await consult_terminology(facts, resources, tx=tx, wanted=wanted)
    add_resources(facts, resources, terms)
    return problems


async def consult_terminology(
    facts: PatientFacts,
    resources: list[dict[str, Any]],
    *,
    tx: RuntimeTerminology | None = None,
    wanted: frozenset[str] = frozenset(),
) -> list[Problem]:
    """The first half of `map_records`, for callers that map off the event loop: ask the
    terminology server about unknown codes; the Problems it leaves are added to `facts`."""
    problems: list[Problem] = []
    if tx is not None:
        for resource, problem in await tx.consult(resources, wanted):
            if subject_of(resource) == facts.reference:
                facts.add(problem)
                problems.append(problem)
    return problems


def add_resources(
    facts: PatientFacts, resources: Iterable[dict[str, Any]], terms: Terminology
) -> None:
    """Map resources into `facts`; an unreadable one becomes a Problem, not an exception.
    In the canonical order, named by `Type/id` (service/patient_screen.py: one policy)."""
    add_records(facts, resources, terms)
