"""Fetch everything the trial needs about one patient, concurrently, and map it to facts.

Where the server declares the `batch` interaction, the Patient read and every search go in one
batch Bundle (one request instead of about ten); each entry is judged as the search alone
would be, and pages after the first are read as usual. Otherwise, or when the server refuses
the batch after all (404/405/501, or 401/403: see `FhirClient.batch_get`), the searches run
concurrently, one request each.

A resource type whose fetch fails does not stop the others: it becomes a `Problem` for the
patient, and every criterion that would have relied on the absence of such records becomes
`unknown` (never pass or fail) with the failure as its reason.

Between fetching and mapping, every path (this fetch, a Bundle posted to /match, CDS Hooks)
calls `map_records`, which first asks the optional terminology server about codes the tables
do not know (service/vocab/runtime.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.criteria.model import TrialDefinition, valuesets_named
from service.errors import FhirError, FhirFatalError, FhirMalformedResponse, FhirTemporaryError
from service.facts import PatientFacts, Problem
from service.fhir.client import FhirClient
from service.fhir.responses import without_query
from service.mappers import subject_of
from service.patient_screen import add_records
from service.terminology import Terminology

if TYPE_CHECKING:
    from service.vocab.runtime import RuntimeTerminology

__all__ = ["FetchPlan", "PatientFetch", "fetch_patient", "map_records", "plan_for"]

log = logging.getLogger(__name__)
# How each type is searched by patient (FHIR R4 search parameters).
PATIENT_PARAM = {
    "Condition": "patient",
    "MedicationStatement": "patient",
    "MedicationRequest": "patient",
    "MedicationAdministration": "patient",
    "MedicationDispense": "patient",
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
    # the value sets the trial reads: what a terminology server is asked about (runtime.py)
    valuesets: frozenset[str] = frozenset()

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


@dataclass(frozen=True)
class _Search:
    """One planned search; `patient_param` is set where the server may refuse it (scan)."""

    resource_type: str
    params: dict[str, str]
    patient_param: str | None = None

    def run(self, fhir: FhirClient, reference: str, token: str | None) -> Awaitable[Any]:
        if self.patient_param is not None:
            return fhir.search_for_patient(
                self.resource_type, self.patient_param, reference, token=token
            )
        return fhir.search_all(self.resource_type, self.params, token=token)


def _short(message: str, url: str | None, limit: int = 300) -> str:
    """A failure's message with the search URL it quotes cut to its path (a chunk of codes
    makes it kilobytes long), and at most `limit` characters."""
    message = without_query(message, url)
    return message if len(message) <= limit else f"{message[: limit - 3]}..."


def _searches(plan: FetchPlan, reference: str) -> dict[str, _Search]:
    """The planned searches by key: `Observation#i` per chunk of codes, then a type each."""
    searches = {
        f"Observation#{index}": _Search("Observation", {"patient": reference, "code": codes})
        for index, codes in enumerate(plan.observation_queries())
    }
    for kind in plan.other_types:
        param = PATIENT_PARAM[kind]
        searches[kind] = _Search(kind, {param: reference}, param)
    return searches


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
    reference = f"Patient/{patient_id}"
    searches = _searches(plan, reference)
    started = time.perf_counter()
    outcomes = None
    if await fhir.supports_batch():
        outcomes = await _fetch_batched(fhir, patient_id, searches, token)
    if outcomes is None:
        outcomes = await _fetch_each(fhir, patient_id, searches, token)
    waited = time.perf_counter()
    facts = PatientFacts(reference)
    fetch = PatientFetch(facts, wait_s=waited - started)
    fetched: list[dict[str, Any]] = []
    for key, outcome in outcomes.items():
        kind = key.split("#")[0]
        if isinstance(outcome, FhirError) and kind == "Patient":
            # Without the Patient itself there is no one to screen: the request fails
            # (404 for an unknown patient, 502/504 for the server) instead of a result.
            raise outcome
        if isinstance(outcome, FhirError):
            # Named by the search, not its URL: a chunk of 60 codes is kilobytes long.
            message = _short(outcome.message, outcome.url)
            problem = Problem(kind, f"{kind} search", f"fetch failed: {message}")
            facts.add(problem)
            fetch.problems.append(problem)
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        if kind == "Patient" and (not isinstance(outcome, dict) or outcome.get("id") != patient_id):
            # A verdict is only ever given for the reference that was read.
            raise FhirMalformedResponse(f"the server answered {reference} with another resource")
        resources = [outcome] if kind == "Patient" else outcome
        fetch.resources += len(resources)
        fetched += resources
    fetch.problems += await map_records(facts, fetched, terms, tx=tx, wanted=plan.valuesets)
    fetch.map_s = time.perf_counter() - waited
    log.info(
        "fetched %s: %d resources, %d failed searches",
        reference,
        fetch.resources,
        len(fetch.problems),
    )
    return fetch


async def _fetch_each(
    fhir: FhirClient, patient_id: str, searches: dict[str, _Search], token: str | None
) -> dict[str, Any]:
    """Key -> resource(s) or exception, one request per search, all at once."""
    reference = f"Patient/{patient_id}"
    tasks: dict[str, Awaitable[Any]] = {"Patient": fhir.read("Patient", patient_id, token=token)}
    for key, search in searches.items():
        tasks[key] = search.run(fhir, reference, token)
    outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
    return dict(zip(tasks, outcomes, strict=True))


async def _fetch_batched(
    fhir: FhirClient, patient_id: str, searches: dict[str, _Search], token: str | None
) -> dict[str, Any] | None:
    """Key -> resource(s) or exception, from one batch and the pages after its entries; None
    when the server refuses the batch. The batch failing as a whole raises (as the Patient
    read failing does). A type the server refused by patient is not asked again: it is
    scanned (cached) as `search_for_patient` does."""
    reference = f"Patient/{patient_id}"
    batched = {
        key: fhir.search_url(search.resource_type, search.params)
        for key, search in searches.items()
        if search.patient_param is None
        or fhir.searchable(search.resource_type, search.patient_param)
    }
    answers = await fhir.batch_get(
        [fhir.resource_url("Patient", patient_id), *batched.values()], token=token
    )
    if answers is None:
        return None
    tasks: dict[str, Awaitable[Any]] = {
        "Patient": _finish_read(fhir, patient_id, answers[0], token)
    }
    pages = dict(zip(batched, answers[1:], strict=True))
    for key, search in searches.items():
        if key in pages:
            tasks[key] = _finish_search(fhir, search, batched[key], pages[key], reference, token)
        else:
            tasks[key] = search.run(fhir, reference, token)
    outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
    return dict(zip(tasks, outcomes, strict=True))


async def _finish_read(
    fhir: FhirClient, patient_id: str, answer: dict[str, Any] | FhirError, token: str | None
) -> dict[str, Any]:
    """The Patient from its batch entry; an entry throttled (429/503) is read again alone,
    with the client's retries, as the read alone would have been retried."""
    if isinstance(answer, FhirTemporaryError):
        return await fhir.read("Patient", patient_id, token=token)
    if isinstance(answer, FhirError):
        raise answer
    return answer


async def _finish_search(
    fhir: FhirClient,
    search: _Search,
    url: str,
    answer: dict[str, Any] | FhirError,
    reference: str,
    token: str | None,
) -> list[dict[str, Any]]:
    """The matches of one batch entry's searchset and of the pages after it. The search is
    asked again alone when its entry was throttled (then with the client's retries) or
    when the server refused its patient parameter (then a scan, as `search_for_patient`)."""
    try:
        if isinstance(answer, FhirError):
            raise answer
        return await fhir.search_from(search.resource_type, url, answer, token=token)
    except FhirTemporaryError as exc:
        if exc is not answer:
            raise
    except FhirFatalError as exc:
        param = search.patient_param
        if param is None or not fhir.refused(search.resource_type, param, exc):
            raise
    result: list[dict[str, Any]] = await search.run(fhir, reference, token)
    return result


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
