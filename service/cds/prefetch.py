"""Prefetch templates for a trial, and one patient's facts from prefetch plus FHIR searches.

Templates (CDS Hooks 2.0, Prefetch Template) ask for what `service.fhir.fetch_patient` reads:
the Patient, the Observations with the trial's codes, and the patient's Conditions,
MedicationStatements, MedicationRequests, MedicationAdministrations, MedicationDispenses,
AllergyIntolerances, Procedures and ResearchSubjects. The Observation codes are split over
several keys so that no template, percent-encoded and with a 64-character patient id, is
longer than `MAX_TEMPLATE_CHARS`.

ResearchSubject is requested too although sekmet-fhir cannot search it by patient: a CDS
client that can satisfy it spares this service the fallback (a cached scan of every
ResearchSubject, `FhirClient.search_for_patient`); one that cannot leaves the key out.

What a prefetch value means (CDS Hooks 2.0, "Providing FHIR Resources to a CDS Service"):

- key absent: the client chose not to, or could not (an error), prefetch it -> we search;
- `null`: "the CDS Client has no data to populate" it -> no records of that kind (unless
  `cds_null_prefetch = "refetch"`, for clients that send null for queries they did not run);
- a searchset Bundle: the results, all of them (next links are not allowed). A Bundle that
  still has a next link, or a `total` above its matches, is incomplete -> we search;
- for the `patient` read: the Patient, whose id must be the context's patientId.

Medications named by reference (`medicationReference: Medication/123`) are no patient's and
have no prefetch key of their own: included ones in a prefetched Bundle (search mode
`include`, as `_include=MedicationRequest:medication` would bring) are read, and the others
the records name are read from the FHIR server as /match reads them
(`service.fetching.read_medications`). The templates do not ask for `_include` (clients need
not support it); with no server to ask, such a record is an unknown drug, never a 412.

A search that fails becomes a Problem (the criteria that would rely on it become `unknown`,
exactly as in /match). Data this service needs but cannot obtain at all - no FHIR server to
ask, or the Patient itself unreadable - is answered 412 Precondition Failed, as the
specification requires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from service.errors import BadRequest, FhirError, ServiceError
from service.facts import PatientFacts, Problem
from service.fetching import add_resources, consult_terminology, read_medications
from service.fhir import FetchPlan, FhirClient
from service.fhir.plan import PATIENT_PARAM
from service.mappers import MedicationTable
from service.terminology import Terminology

if TYPE_CHECKING:
    from service.vocab.runtime import RuntimeTerminology

__all__ = [
    "PATIENT_TOKEN",
    "CdsDataUnavailable",
    "Gathered",
    "PrefetchQuery",
    "gather",
    "prefetch_queries",
    "read_prefetch",
    "template_length",
]

log = logging.getLogger(__name__)
PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105 (a prefetch token, not a password)
# Several EHRs and proxies cap a request line near 2 KB, and the client adds its base URL.
MAX_TEMPLATE_CHARS = 1800
_ID_ROOM = 64 - len(PATIENT_TOKEN)  # a patient id is at most 64 characters (FHIR R4 id)
# Prefetch keys of the searches other than Observation (stable: CDS clients configure them).
TYPE_KEYS = {
    "Condition": "conditions",
    "MedicationStatement": "medication-statements",
    "MedicationRequest": "medication-requests",
    "MedicationAdministration": "medication-administrations",
    "MedicationDispense": "medication-dispenses",
    "AllergyIntolerance": "allergy-intolerances",
    "Procedure": "procedures",
    "ResearchSubject": "research-subjects",
}


class CdsDataUnavailable(ServiceError):
    """412 (CDS Hooks 2.0): data the service needs was neither prefetched nor obtainable."""

    status = 412
    code = "incomplete"


@dataclass(frozen=True)
class PrefetchQuery:
    """One prefetch key: a read of the Patient or a search by patient."""

    key: str
    resource_type: str
    codes: str | None = None  # Observation: comma-separated system|code

    @property
    def is_read(self) -> bool:
        return self.resource_type == "Patient"

    def template(self) -> str:
        if self.is_read:
            return f"Patient/{PATIENT_TOKEN}"
        param = PATIENT_PARAM.get(self.resource_type, "patient")
        query = f"{self.resource_type}?{param}={PATIENT_TOKEN}"
        return f"{query}&code={self.codes}" if self.codes else query

    async def run(
        self, fhir: FhirClient, patient_id: str, token: str | None
    ) -> list[dict[str, Any]]:
        reference = f"Patient/{patient_id}"
        if self.is_read:
            return [await fhir.read("Patient", patient_id, token=token)]
        if self.codes:
            params = {"patient": reference, "code": self.codes}
            return await fhir.search_all(self.resource_type, params, token=token)
        param = PATIENT_PARAM.get(self.resource_type, "patient")
        return await fhir.search_for_patient(self.resource_type, param, reference, token=token)


def template_length(template: str) -> int:
    """A template's length as sent: percent-encoded, with a patient id of 64 characters."""
    return len(quote(template, safe="?&=,{}/")) + _ID_ROOM


def _observation_chunks(codes: Sequence[str]) -> list[str]:
    """Codes joined by commas, in as few groups as keep each template short enough."""
    prefix = f"Observation?patient={PATIENT_TOKEN}&code="
    chunks: list[list[str]] = [[]]
    for code in codes:
        longer = ",".join([*chunks[-1], code])
        if chunks[-1] and template_length(prefix + longer) > MAX_TEMPLATE_CHARS:
            chunks.append([])
        chunks[-1].append(code)
    return [",".join(chunk) for chunk in chunks if chunk]


def prefetch_queries(plan: FetchPlan) -> list[PrefetchQuery]:
    """The prefetch keys of a trial, in a stable order: patient, observations-N, the others."""
    queries = [PrefetchQuery("patient", "Patient")]
    chunks = _observation_chunks(plan.observation_codes)
    queries += [
        PrefetchQuery(f"observations-{n}", "Observation", codes)
        for n, codes in enumerate(chunks, start=1)
    ]
    queries += [PrefetchQuery(TYPE_KEYS.get(t, t.lower()), t) for t in plan.other_types]
    return queries


# ---------------------------------------------------------------------------- reading prefetch
def _bundle_resources(query: PrefetchQuery, value: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The matches of a prefetched searchset Bundle; None when the Bundle is incomplete."""
    if value.get("resourceType") == "OperationOutcome":
        # The client should have left the key out on an error (CDS Hooks 2.0); treat it so.
        log.warning("prefetch %s is an OperationOutcome; searching instead", query.key)
        return None
    if value.get("resourceType") != "Bundle":
        raise BadRequest(
            f"prefetch {query.key!r} must be a searchset Bundle or null, "
            f"not {value.get('resourceType')!r}"
        )
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest(f"prefetch {query.key!r}: Bundle.entry is not a list")
    found: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise BadRequest(f"prefetch {query.key!r}: entry[{index}] has no resource")
        mode = (entry.get("search") or {}).get("mode", "match")
        if mode == "match" and resource.get("resourceType") == query.resource_type:
            found.append(resource)
        elif mode == "include" and resource.get("resourceType") == "Medication":
            included.append(resource)  # a Medication its records name (_include)
    links = value.get("link") or []
    has_next = any(isinstance(link, dict) and link.get("relation") == "next" for link in links)
    total = value.get("total")
    if has_next or (isinstance(total, int) and total > len(found)):
        # Prefetch must arrive in one piece (CDS Hooks 2.0); a partial list must not decide.
        log.warning("prefetch %s is incomplete (next link or total); searching", query.key)
        return None
    return found + included


def read_prefetch(
    queries: Sequence[PrefetchQuery],
    prefetch: Mapping[str, Any] | None,
    patient_id: str,
    null_means: Literal["no-data", "refetch"] = "no-data",
) -> dict[str, list[dict[str, Any]] | None]:
    """For each query: the prefetched resources ([] for none), or None to search for them."""
    prefetch = prefetch or {}
    readings: dict[str, list[dict[str, Any]] | None] = {}
    for query in queries:
        if query.key not in prefetch:
            readings[query.key] = None
            continue
        value = prefetch[query.key]
        if value is None:
            if null_means == "refetch":
                readings[query.key] = None
            elif query.is_read:
                raise CdsDataUnavailable(
                    f"prefetch 'patient' is null: the CDS client has no Patient/{patient_id}"
                )
            else:
                readings[query.key] = []
            continue
        if not isinstance(value, dict):
            raise BadRequest(
                f"prefetch {query.key!r} must be a FHIR resource (JSON object) or null"
            )
        if query.is_read:
            if value.get("resourceType") != "Patient" or value.get("id") != patient_id:
                raise BadRequest(
                    f"prefetch 'patient' must be the Patient with id {patient_id!r} "
                    "(context.patientId)"
                )
            readings[query.key] = [value]
        else:
            readings[query.key] = _bundle_resources(query, value)
    return readings


# ---------------------------------------------------------------------------- gathering facts
@dataclass
class Gathered:
    facts: PatientFacts
    prefetched: list[str] = field(default_factory=list)  # keys taken from the prefetch
    fetched: list[str] = field(default_factory=list)  # keys searched on the FHIR server
    problems: list[Problem] = field(default_factory=list)


async def gather(
    queries: Sequence[PrefetchQuery],
    readings: Mapping[str, list[dict[str, Any]] | None],
    patient_id: str,
    terms: Terminology,
    *,
    fhir: FhirClient | None,
    token: str | None = None,
    tx: RuntimeTerminology | None = None,
    wanted: frozenset[str] = frozenset(),
    off_loop: OffLoop | None = None,
) -> Gathered:
    """Prefetched resources, plus a search for every key not prefetched, mapped to facts
    (after asking the optional terminology server `tx` about unknown codes).

    Searches run concurrently. `fhir` None with something left to search is a 412. Mapping
    runs through `off_loop` when given (the API's CPU threads), so a large prefetch does not
    hold the event loop.
    """
    records: list[dict[str, Any]] = []
    facts = PatientFacts(f"Patient/{patient_id}")
    gathered = Gathered(facts)
    missing = [q for q in queries if readings.get(q.key) is None]
    if missing and fhir is None:
        keys = ", ".join(q.key for q in missing)
        raise CdsDataUnavailable(
            f"not prefetched and no FHIR server to ask (send fhirServer or configure "
            f"COHORT_MATCH_FHIR_BASE_URL): {keys}"
        )
    outcomes: list[list[dict[str, Any]] | BaseException] = []
    if missing:
        assert fhir is not None
        outcomes = await asyncio.gather(
            *(q.run(fhir, patient_id, token) for q in missing), return_exceptions=True
        )
    for query, outcome in zip(missing, outcomes, strict=True):
        gathered.fetched.append(query.key)
        if isinstance(outcome, FhirError):
            if query.is_read:
                raise CdsDataUnavailable(
                    f"Patient/{patient_id} could not be read: {outcome.message}"
                ) from outcome
            problem = Problem(
                query.resource_type, outcome.url or query.key, f"fetch failed: {outcome.message}"
            )
            facts.add(problem)
            gathered.problems.append(problem)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            records += outcome
    for query in queries:
        resources = readings.get(query.key)
        if resources is not None:
            gathered.prefetched.append(query.key)
            records += resources
    medications = None
    if fhir is not None:  # Medications the records name that neither source brought
        read = await read_medications(fhir, records, token=token)
        records += read.read
        medications = read.table
    gathered.problems += await consult_terminology(facts, records, tx=tx, wanted=wanted)
    await _map(off_loop, facts, records, terms, medications)
    return gathered


OffLoop = Callable[..., Awaitable[Any]]


async def _map(
    off_loop: OffLoop | None,
    facts: PatientFacts,
    resources: list[dict[str, Any]],
    terms: Terminology,
    medications: MedicationTable | None,
) -> None:
    if off_loop is None:
        add_resources(facts, resources, terms, medications)
    else:
        await off_loop(add_resources, facts, resources, terms, medications)
