"""Between a trial and the FHIR client: what to fetch for a trial, and turning what was
fetched into facts. service/fhir/ knows HTTP and FHIR only; this module knows trials, code
tables and mappers.

    plan_for(trial, terms)                  the FetchPlan of a trial (service/fhir/plan.py)
    fetch_patient(fhir, id, plan, terms)    fetch (service/fhir/patient.py) and map to facts
    map_records(facts, resources, terms)    ask the terminology server, then map

A resource type whose fetch fails becomes a `Problem` for the patient, and every criterion
that would have relied on the absence of such records becomes `unknown` (never pass or fail)
with the failure as its reason.

Medications named by reference (`medicationReference: Medication/123`, as Epic and Cerner
send orders) are no patient's, so no search by patient finds them: `read_medications` reads
those the records name and the answer lacks, by id, after the searches (one batch, or
concurrent reads). One that cannot be read (404, a failed read, on another server) is
recorded in the `MedicationTable` with why: the record naming it is an unknown drug, which
the medication criteria read as "could be" theirs (`unknown`, never pass or fail). Not
`_include`: a server that does not support it may refuse the whole search under strict
handling, and the reads cost one round trip only for patients with such records.

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
from service.errors import FhirError, FhirNotFound
from service.facts import PatientFacts, Problem
from service.fhir.client import FhirClient
from service.fhir.patient import fetch_records, read_each
from service.fhir.plan import FetchPlan
from service.fhir.responses import without_query
from service.mappers import MedicationTable, subject_of
from service.mappers.medication_table import medication_key, medication_reference
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
    "read_medications",
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
        observation_codes=tuple(sorted({_token(terms, system, code) for system, code in codes})),
        valuesets=frozenset(valuesets_named(trial)),
    )


def _token(terms: Terminology, system: str, code: str) -> str:
    """A code as a search token. A standard system with other names (LOINC, also sent as
    urn:oid:2.16.840.1.113883.6.1 or LN: terminology/code_systems.csv) is asked for by its
    code alone, which FHIR matches in any system, so a record stored under another name of
    the system is found (and then read by its canonical system); a site's local code keeps its
    system, which alone gives it meaning."""
    return code if terms.has_other_names(system) else f"{system}|{code}"


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
    started = time.perf_counter()
    medications = await read_medications(fhir, records.resources, token=token)
    records.resources += medications.read
    mapping = time.perf_counter()
    facts = PatientFacts(records.reference)
    wait_s = records.wait_s + mapping - started
    fetch = PatientFetch(facts, resources=len(records.resources), wait_s=wait_s)
    for kind, error in records.failures:
        # Named by the search, not its URL: a chunk of 60 codes is kilobytes long.
        message = _short(error.message, error.url)
        problem = Problem(kind, f"{kind} search", f"fetch failed: {message}")
        facts.add(problem)
        fetch.problems.append(problem)
    fetch.problems += await map_records(
        facts, records.resources, terms, tx=tx, wanted=plan.valuesets, medications=medications.table
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
    medications: MedicationTable | None = None,
) -> list[Problem]:
    """Ask the terminology server (when one is configured) about the records' codes the
    tables do not know, then map the records into `facts`. Returns the Problems added for
    records the server could not classify (already in `facts`). `medications`: what
    `read_medications` learnt of the Medications the records name (those read are among
    `resources`; the table says why others could not be)."""
    problems = await consult_terminology(facts, resources, tx=tx, wanted=wanted)
    add_resources(facts, resources, terms, medications)
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
    facts: PatientFacts,
    resources: Iterable[dict[str, Any]],
    terms: Terminology,
    medications: MedicationTable | None = None,
) -> None:
    """Map resources into `facts`; an unreadable one becomes a Problem, not an exception.
    In the canonical order, named by `Type/id` (service/patient_screen.py: one policy).
    Medications among the resources, then `medications`, serve records naming them."""
    add_records(facts, resources, terms, medications)


@dataclass
class MedicationsRead:
    """The Medications `read_medications` read, and a table saying why others could not be."""

    read: list[dict[str, Any]] = field(default_factory=list)
    table: MedicationTable = field(default_factory=MedicationTable)


async def read_medications(
    fhir: FhirClient, resources: list[dict[str, Any]], *, token: str | None = None
) -> MedicationsRead:
    """Read the Medications the medication records among `resources` name by reference and
    `resources` lack (relative references, or absolute ones on this server). Never raises
    for a read that fails: the table records why, for the note of the records naming it."""
    held = MedicationTable(r for r in resources if r.get("resourceType") == "Medication").keys()
    done = MedicationsRead()
    wanted: set[str] = set()
    for resource in resources:
        reference = medication_reference(resource)
        key = medication_key(reference) if reference else None
        if reference is None or key is None or key in held:
            continue
        if reference.startswith(("http://", "https://")) and not reference.startswith(
            fhir.base_url
        ):
            done.table.unavailable(key, "on another server: not read")
            continue
        wanted.add(key.removeprefix("Medication/"))
    ids = sorted(wanted)
    for ident, answer in (await read_each(fhir, "Medication", ids, token=token)).items():
        key = f"Medication/{ident}"
        if isinstance(answer, FhirError):
            done.table.unavailable(key, _unread(answer))
        elif answer.get("resourceType") != "Medication" or answer.get("id") != ident:
            done.table.unavailable(key, "the server answered another resource")
        else:
            done.read.append(answer)
    if ids:
        log.info("read %d of %d referenced Medication(s)", len(done.read), len(ids))
    return done


def _unread(error: FhirError) -> str:
    if isinstance(error, FhirNotFound) or error.http_status in (404, 410):
        return "not found on the FHIR server"
    return f"could not be fetched: {_short(error.message, error.url, 160)}"
