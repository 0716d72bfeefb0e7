"""Fetch everything a plan names about one patient, concurrently: raw FHIR resources.

Where the server declares the `batch` interaction, the Patient read and every search go in one
batch Bundle (one request instead of about ten); each entry is judged as the search alone
would be, and pages after the first are read as usual. Otherwise, or when the server refuses
the batch after all (404/405/501, or 401/403: see `FhirClient.batch_get`), the searches run
concurrently, one request each.

A resource type whose fetch fails does not stop the others: its error is kept, by type, in
`PatientRecords.failures` (the caller turns it into a Problem: service/fetching.py). A
failure to read the Patient itself raises.

`read_each` reads resources by id (the Medications a patient's records name by reference,
service/fetching.py), in one batch where the server takes one, else concurrently; each read
answers its resource or the error it met, never raising for one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from service.errors import FhirError, FhirFatalError, FhirMalformedResponse, FhirTemporaryError
from service.fhir.client import FhirClient
from service.fhir.plan import PATIENT_PARAM, FetchPlan

__all__ = ["PatientRecords", "fetch_records", "read_each"]


@dataclass
class PatientRecords:
    """What the server answered about one patient."""

    reference: str  # Patient/<id>
    resources: list[dict[str, Any]] = field(default_factory=list)  # the Patient first
    failures: list[tuple[str, FhirError]] = field(default_factory=list)  # (type, error)
    wait_s: float = 0.0  # wall time waiting for the server (all searches, concurrently)


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


async def fetch_records(
    fhir: FhirClient, patient_id: str, plan: FetchPlan, *, token: str | None = None
) -> PatientRecords:
    """The Patient and every planned search, in one batch or concurrently. A failed search
    is kept in `failures`; a failed Patient read raises (there is no one to screen)."""
    reference = f"Patient/{patient_id}"
    searches = _searches(plan, reference)
    started = time.perf_counter()
    outcomes = None
    if await fhir.supports_batch():
        outcomes = await _fetch_batched(fhir, patient_id, searches, token)
    if outcomes is None:
        outcomes = await _fetch_each(fhir, patient_id, searches, token)
    records = PatientRecords(reference, wait_s=time.perf_counter() - started)
    for key, outcome in outcomes.items():
        kind = key.split("#")[0]
        if isinstance(outcome, FhirError) and kind == "Patient":
            # Without the Patient itself there is no one to screen: the request fails
            # (404 for an unknown patient, 502/504 for the server) instead of a result.
            raise outcome
        if isinstance(outcome, FhirError):
            records.failures.append((kind, outcome))
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        if kind == "Patient" and (not isinstance(outcome, dict) or outcome.get("id") != patient_id):
            # A verdict is only ever given for the reference that was read.
            raise FhirMalformedResponse(f"the server answered {reference} with another resource")
        records.resources += [outcome] if kind == "Patient" else outcome
    return records


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


async def read_each(
    fhir: FhirClient, resource_type: str, ids: list[str], *, token: str | None = None
) -> dict[str, dict[str, Any] | FhirError]:
    """`resource_type/<id>` for each id: the resource, or the error its read met (a 404, a
    failure of the whole batch). In one batch where the server declares `batch` (an entry
    throttled is read again alone, with the client's retries), else concurrently."""
    if not ids:
        return {}
    answers: list[dict[str, Any] | FhirError] | None = None
    if await fhir.supports_batch():
        urls = [fhir.resource_url(resource_type, ident) for ident in ids]
        try:
            answers = await fhir.batch_get(urls, token=token)
        except FhirError as exc:
            return dict.fromkeys(ids, exc)
    tasks = [
        fhir.read(resource_type, ident, token=token)
        if answers is None or isinstance(answers[index], FhirTemporaryError)
        else _answered(answers[index])
        for index, ident in enumerate(ids)
    ]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    found: dict[str, dict[str, Any] | FhirError] = {}
    for ident, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, FhirError):
            raise outcome
        found[ident] = outcome
    return found


async def _answered(answer: dict[str, Any] | FhirError) -> dict[str, Any]:
    if isinstance(answer, FhirError):
        raise answer
    return answer
