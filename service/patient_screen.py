"""One patient's raw resources -> PatientResult: the pure entry point every engine calls.

    context = load_screening_context(trial_path, terminology_root, as_of, site_map=...)
    result = screen_patient(resources, context)

`resources` are one patient's FHIR resources as parsed JSON (dicts), as JSON bytes, or as
`Record`s (either, with where a file read it); a Bundle among them is read as its entries.
`ScreeningContext` is everything else the verdicts depend on: the trial, the code tables
(with the site's code map), `as_of` and the identifier type shown as `mrn`. It pickles as
the paths it was loaded from, so a worker process or a Spark executor loads the code tables
once (and builds the UCUM registry once), not once per task. The CLI's screen and the
sweeps (service/screening.py, per partition), the Spark job (service/spark/) and, through
`add_records`, the API's Bundle and FHIR paths and CDS prefetch all read a patient's records
with the policies below.

**Canonical order.** A result must not depend on the order in which a patient's resources
arrive (Bulk NDJSON by type, a Bundle in the sender's order, Spark's shuffle). Records are
mapped in the order of (resourceType, id, the resource's JSON with sorted keys): the last key
only orders two records that share a type and an id (a resource sent twice, a duplicate id),
so the order is total and the facts, evidence and cited records are the same for any
permutation. Rules that prefer one record among equals (the latest of two results on one day)
therefore prefer by id, never by arrival.

**Unreadable records.** A record that cannot be mapped becomes a `Problem` of its patient
(a criterion that would pass on the absence of such records becomes unknown) named by its
`Type/id`, never by a file and line alone: the same record read from a file, a Bundle, a FHIR
server or a Parquet table is named alike, and shuffling the file changes nothing. Where it
was read (`file:line`) is kept in `Unreadable.where` for the run's list of errors. Bytes
that are not JSON, or JSON that is no resource, carry no name: they are reported with where
they were read, and (having no type) withhold no verdict.

**Medications named by reference.** Medication resources among the resources (a Bundle's
entries included) name no patient: they are available to every medication record of the
call, as is a population's side table passed as `medications` (a Bulk export's
Medication.ndjson, a FHIR read: service/mappers/medication_table.py). A record naming one that
is in neither is read as an unknown drug, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition, check_valuesets, load_trial
from service.criteria.verdict import PatientResult
from service.facts import PatientFacts, Problem
from service.mappers import (
    SUBJECT_FIELD,
    MappingError,
    MedicationTable,
    map_resource,
    problem_for,
    subject_of,
)
from service.sources import bundle_entries
from service.terminology import Terminology

__all__ = [
    "RawResource",
    "Record",
    "Screened",
    "ScreeningContext",
    "Unreadable",
    "add_records",
    "canonical_order",
    "load_screening_context",
    "screen_patient",
    "screen_patient_records",
]

RawResource = Mapping[str, Any] | bytes | str


@dataclass(slots=True, unsafe_hash=True)
class Record:
    """A raw resource and where it was read (`file:line`, `file#entry[3]`), if from a file.

    Treated as immutable, not declared `frozen=True` (one per record of a population: a
    frozen `__init__` sets each field through `object.__setattr__`, as facts.py says)."""

    body: RawResource
    where: str | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record that could not be read: its `Type/id` when it has one, where it was read."""

    reference: str | None
    where: str | None
    message: str  # names the record by its reference when it has one

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(frozen=True, slots=True)
class _Origin:
    trial_path: str
    terminology_root: str
    site_map: str | None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a trial is no key
class ScreeningContext:
    """What a verdict depends on besides the patient's records. Immutable; picklable as the
    paths it was loaded from (`load_screening_context`), or as its objects when built from
    them (`ScreeningContext(trial=..., terms=..., as_of=...)`)."""

    trial: TrialDefinition
    terms: Terminology
    as_of: date
    mrn_type: str = "MR"  # the identifier type shown as `mrn` (COHORT_MATCH_MRN_TYPE)
    origin: _Origin | None = field(default=None, repr=False, compare=False)

    def on(self, as_of: date) -> ScreeningContext:
        """The same trial and code tables, on another day."""
        return replace(self, as_of=as_of)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.origin is not None:  # loaded again (once per process) where unpickled
            return (_restore, (self.origin, self.as_of, self.mrn_type))
        return (ScreeningContext, (self.trial, self.terms, self.as_of, self.mrn_type))


@lru_cache(maxsize=2)
def _loaded(origin: _Origin) -> tuple[TrialDefinition, Terminology]:
    site_map = Path(origin.site_map) if origin.site_map else None
    terms = Terminology.load(Path(origin.terminology_root), site_map)
    trial = load_trial(Path(origin.trial_path))
    check_valuesets(trial, frozenset(terms.valuesets))
    return trial, terms


@lru_cache(maxsize=2)
def _warmed(origin: _Origin) -> tuple[TrialDefinition, Terminology]:
    trial, terms = _loaded(origin)
    terms.warm_up()
    return trial, terms


def _restore(origin: _Origin, as_of: date, mrn_type: str) -> ScreeningContext:
    trial, terms = _warmed(origin)
    return ScreeningContext(trial, terms, as_of, mrn_type, origin)


def load_screening_context(
    trial_path: Path | str,
    terminology_root: Path | str,
    as_of: date,
    *,
    site_map: Path | str | None = None,
    mrn_type: str = "MR",
    warm_up: bool = True,
) -> ScreeningContext:
    """The context of a trial file and code tables (with the site's code map), checked
    against each other; loaded once per process and per paths. `warm_up` builds the UCUM
    registry now (about a second) rather than at the first quantity mapped."""
    origin = _Origin(str(trial_path), str(terminology_root), str(site_map) if site_map else None)
    trial, terms = _warmed(origin) if warm_up else _loaded(origin)
    return ScreeningContext(trial, terms, as_of, mrn_type, origin)


# ---------------------------------------------------------------- the policies
def _sort_key(resource: dict[str, Any]) -> tuple[str, str]:
    kind, ident = resource.get("resourceType"), resource.get("id")
    return (kind if isinstance(kind, str) else "", ident if isinstance(ident, str) else "")


def _canonical_json(resource: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (a caller's own object): its repr still orders it
        return repr(resource).encode()


def canonical_order(
    records: Iterable[tuple[dict[str, Any], str | None]],
) -> list[tuple[dict[str, Any], str | None]]:
    """Parsed records in the canonical order (see the module docstring): by type and id,
    and only records sharing both by their JSON with sorted keys (rare, so the JSON is
    serialised for those alone). Where a record was read never orders it."""
    keyed = [(_sort_key(record[0]), record) for record in records]
    keyed.sort(key=_first)  # stable: the JSON below orders only records with equal keys
    ordered = [record for _, record in keyed]
    start = 0
    for end in range(1, len(keyed) + 1):
        if end < len(keyed) and keyed[end][0] == keyed[start][0]:
            continue
        if end - start > 1:
            ordered[start:end] = sorted(ordered[start:end], key=lambda r: _canonical_json(r[0]))
        start = end
    return ordered


def _first(pair: tuple[tuple[str, str], Any]) -> tuple[str, str]:
    return pair[0]


def _parse(
    resources: Iterable[RawResource | Record], unreadable: list[Unreadable]
) -> list[tuple[dict[str, Any], str | None]]:
    """Each raw resource parsed, with where it was read, a Bundle as its entries; bytes that
    are no resource are added to `unreadable`."""
    parsed: list[tuple[dict[str, Any], str | None]] = []
    for item in resources:
        body, where = (item.body, item.where) if isinstance(item, Record) else (item, None)
        if type(body) is bytes or isinstance(body, bytes | str):  # `type`: the usual, cheaply
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                message = f"not valid JSON ({str(exc).splitlines()[0][:120]})"
                unreadable.append(Unreadable(None, where, message))
                continue
        if type(body) is not dict and not isinstance(body, Mapping):
            unreadable.append(Unreadable(None, where, "not a FHIR resource (no resourceType)"))
            continue
        if not isinstance(body.get("resourceType"), str):
            unreadable.append(Unreadable(None, where, "not a FHIR resource (no resourceType)"))
            continue
        resource = body if type(body) is dict or isinstance(body, dict) else dict(body)
        if resource["resourceType"] != "Bundle":
            parsed.append((resource, where))
            continue
        # references to the Bundle's Patients and Medications made relative, as files are read
        for entry, at, error in bundle_entries(resource, where or "Bundle"):
            if entry is None:
                unreadable.append(Unreadable(None, at, error or "entry has no FHIR resource"))
            else:
                parsed.append((entry, at))
    return parsed


def _name(resource: dict[str, Any], where: str | None) -> tuple[str | None, str]:
    """(reference, how a Problem names the record): `Type/id`, or for a record without an
    id its type and where it was read."""
    kind, ident = resource.get("resourceType"), resource.get("id")
    if isinstance(ident, str) and ident:
        return f"{kind}/{ident}", f"{kind}/{ident}"
    return None, f"{kind} without an id" + (f" ({where})" if where else "")


def add_records(
    facts: PatientFacts,
    resources: Iterable[RawResource | Record],
    terms: Terminology,
    medications: MedicationTable | None = None,
) -> list[Unreadable]:
    """Map one patient's resources into `facts`, in the canonical order; an unreadable one
    becomes a Problem of the patient (named by `Type/id`), and is returned. Resources of
    another patient are passed over. Medication resources among them, then `medications`,
    are what medication records naming a Medication by reference read."""
    unreadable: list[Unreadable] = []
    ordered = canonical_order(_parse(resources, unreadable))
    table = MedicationTable(parent=medications)
    patients: list[dict[str, Any]] = []
    for resource, _ in ordered:
        if resource["resourceType"] == "Medication":
            table.add(resource)
        elif resource["resourceType"] == "Patient":
            patients.append(resource)
    owner = _Owner(facts.reference, patients)
    for resource, where in ordered:
        resource, orphan = owner.claim(resource)
        if orphan is not None:
            reference, name = _name(resource, where)
            unreadable.append(Unreadable(reference, where, orphan))
            claimed = {
                **resource,
                SUBJECT_FIELD[resource["resourceType"]]: {"reference": facts.reference},
            }
            mapped = problem_for(claimed, orphan, name, terms)
            if mapped is not None:
                facts.add(mapped.fact)
            continue
        try:
            mapped = map_resource(resource, terms, where, table)
        except MappingError as exc:
            message = str(exc)
            reference, name = _name(resource, where)
            unreadable.append(Unreadable(reference, where, message))
            cause = message.removeprefix(f"{resource.get('resourceType')}/{resource.get('id')}: ")
            mapped = problem_for(resource, cause, name, terms)
        if mapped is not None and mapped.patient == facts.reference:
            facts.add(mapped.fact)
    return unreadable


class _Owner:
    """Records that name their patient without a literal reference (`subject: {identifier:
    {system, value}}`, a `display` only, nothing), as some interfaces send them. One whose
    identifier is one of the Patient's own is this patient's and read as such. Among one
    patient's records alone (a single Patient resource, this one), any other is reported as an
    unreadable record of this patient, so the verdicts it could change are `unknown`, not
    decided without it (unmapped is not absent). Elsewhere it names no patient, as before."""

    def __init__(self, reference: str, patients: list[dict[str, Any]]) -> None:
        self.reference = reference
        mine = [p for p in patients if f"Patient/{p.get('id')}" == reference]
        self.alone = len(patients) == 1 and len(mine) == 1
        self.identifiers: set[tuple[str | None, str]] = set()
        for patient in mine:
            for entry in patient.get("identifier") or ():
                if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                    system = entry.get("system")
                    known = system if isinstance(system, str) else None
                    self.identifiers.add((known, entry["value"]))

    def claim(self, resource: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The resource to map (its subject made this patient's reference when its
        identifier is theirs), and why it is this patient's unreadable record, if it is."""
        field_name = SUBJECT_FIELD.get(resource["resourceType"])
        if field_name is None:
            return resource, None
        subject = resource.get(field_name)
        if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
            return resource, None  # a literal reference: read as it says
        if subject is not None and not isinstance(subject, dict):
            return resource, None  # malformed: reported as it is
        if self._names_me(subject):
            return {**resource, field_name: {"reference": self.reference}}, None
        if self.alone:
            how = "by identifier" if (subject or {}).get("identifier") else "by display only"
            if subject is None:
                how = "not at all"
            return resource, f"names its patient {how}, not as {self.reference}; review"
        return resource, None

    def _names_me(self, subject: dict[str, Any] | None) -> bool:
        identifier = (subject or {}).get("identifier")
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            return False
        system = identifier.get("system")
        value = identifier["value"]
        if isinstance(system, str):
            return (system, value) in self.identifiers
        return any(known == value for _, known in self.identifiers)


@dataclass(frozen=True, slots=True)
class Screened:
    """A patient's result, with the records that could not be read and where."""

    result: PatientResult
    unreadable: list[Unreadable]


def _patient_of(resources: list[RawResource | Record]) -> str:
    named: set[str] = set()
    for item in resources:
        body = item.body if isinstance(item, Record) else item
        if isinstance(body, bytes | str):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                continue
        if not isinstance(body, dict):
            continue
        bodies = [body]
        if body.get("resourceType") == "Bundle":
            bodies = [r for r, _, _ in bundle_entries(body, "Bundle") if r is not None]
        for resource in bodies:
            try:
                patient = subject_of(resource)
            except (TypeError, AttributeError):
                continue
            if patient is not None:
                named.add(patient)
    if len(named) != 1:
        raise ValueError(f"the resources name {len(named)} patients, not one")
    return named.pop()


def screen_patient_records(
    resources: Iterable[RawResource | Record],
    context: ScreeningContext,
    *,
    patient: str | None = None,
    problems: Iterable[Problem] = (),
    medications: MedicationTable | None = None,
) -> Screened:
    """`screen_patient`, with the unreadable records listed (for a run's errors)."""
    items = list(resources)
    reference = patient if patient is not None else _patient_of(items)
    facts = PatientFacts(reference)
    facts.extend(problems)
    unreadable = add_records(facts, items, context.terms, medications)
    result = evaluate(context.trial, facts, context.as_of, context.terms, mrn_type=context.mrn_type)
    return Screened(result, unreadable)


def screen_patient(
    resources: Iterable[RawResource | Record],
    context: ScreeningContext,
    *,
    patient: str | None = None,
    problems: Iterable[Problem] = (),
    medications: MedicationTable | None = None,
) -> PatientResult:
    """Every criterion of `context.trial` for the patient these resources describe.

    `patient` (`Patient/<id>`) names the patient when the resources may hold others' (they
    are passed over); without it the resources must name exactly one (ValueError). A Bundle
    among the resources is read as its entries (its Medications serve all its patients).
    `problems` are known before mapping (a failed search, an unknown code the terminology
    server could not classify); `medications` are Medication resources sent apart (a
    population's side table). Pure: the same resources, in any order, give the same result.
    """
    return screen_patient_records(
        resources, context, patient=patient, problems=problems, medications=medications
    ).result
