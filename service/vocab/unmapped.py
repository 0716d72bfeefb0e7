"""Codes in a population that no value set of a trial recognises: what a site should map.

Reads the same inputs as `screen` (Bundles, NDJSON; `service.sources`), one resource at a
time, keeping only a counter per distinct code, so a population of any size fits. A record
counts as unmapped when none of its codings (nor the standard code the site code map gives
for one) belongs to a value set the trial reads; each of its codings is then counted, under
its resource type. A record with text but no coding is counted under an empty system and
code, by its text. Review terms (`terms.review_matches`) say which of the trial's value sets
the display or text suggests: the rows to look at first.

A medication record's codes are its Medication's, as the mapper reads them (code and
ingredients): a contained one, or one sent apart that it names by reference
(`Medication/123`, from any file of the input: such records are counted once the whole
input is read). One naming a Medication the input does not hold is counted under an empty
system and code with the reference's display, as a record with text only; Medication
resources themselves are not counted (the records naming them are).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.mappers.medication_table import MedicationTable, medication_reference
from service.sources import chunks, read_chunk
from service.terminology import Terminology

__all__ = ["CODE_FIELD", "Report", "UnmappedCode", "codings_of", "unmapped"]

MEDICATIONS = (
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
)
CODE_FIELD = {
    "Condition": "code",
    "Observation": "code",
    "AllergyIntolerance": "code",
    "Procedure": "code",
    **{kind: "medicationCodeableConcept" for kind in MEDICATIONS},
}


@dataclass(frozen=True, slots=True)
class UnmappedCode:
    resource_type: str
    system: str
    code: str
    display: str
    count: int
    possible: tuple[str, ...]  # value sets of the trial whose review terms the text matches


@dataclass(frozen=True)
class Report:
    codes: list[UnmappedCode]
    resources: int  # records of the types read
    unmapped_resources: int
    errors: int  # lines or entries that were not FHIR resources


def _medication(resource: dict[str, Any], medications: MedicationTable | None) -> Any:
    """The Medication a medication record names (contained, or in `medications`), if any."""
    value = resource.get("medicationReference")
    target = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and f"#{contained.get('id')}" == target:
                return contained
        return None
    found, _ = (medications or MedicationTable()).find(target)
    return found


def _codings(concept: Any) -> list[tuple[str, str, str]]:
    found = []
    for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code.strip():
            found.append((system, code.strip(), str(coding.get("display") or "")))
    return found


def codings_of(
    resource: dict[str, Any], medications: MedicationTable | None = None
) -> tuple[list[tuple[str, str, str]], str]:
    """(system, code, display) of the record's code, and its text (tolerant: a malformed
    coding is passed over, as the mappers would report it). A medication record naming a
    Medication (contained, or in `medications`) has that Medication's code and ingredients;
    one naming a Medication not available has the reference's display as its text."""
    kind = resource.get("resourceType")
    field = CODE_FIELD.get(kind) if isinstance(kind, str) else None
    if field is None:
        return [], ""
    concept = resource.get(field)
    if concept is None and kind in MEDICATIONS:
        medication = _medication(resource, medications)
        if not isinstance(medication, dict):
            display = (resource.get("medicationReference") or {}).get("display")
            return [], display if isinstance(display, str) else ""
        concept = medication.get("code")
        found = _codings(concept)
        for ingredient in medication.get("ingredient") or ():
            if isinstance(ingredient, dict):
                found += _codings(ingredient.get("itemCodeableConcept"))
    else:
        found = _codings(concept)
    text = concept.get("text") if isinstance(concept, dict) else None
    return found, text if isinstance(text, str) else ""


def _recognised(
    terms: Terminology, codes: Iterable[tuple[str, str, str]], wanted: frozenset[str]
) -> bool:
    for system, code, _ in codes:
        if terms.concepts_of_code(system, code) & wanted:
            return True
        mapped = terms.translate_pair(system, code)
        if mapped is not None and terms.concepts_of_code(*mapped) & wanted:
            return True
    return False


def _resources(data: Path) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    for chunk in chunks(data):
        for resource, _, error in read_chunk(chunk):
            yield resource, error


def _count(
    terms: Terminology,
    wanted: frozenset[str],
    kind: str,
    codes: list[tuple[str, str, str]],
    text: str,
    counts: Counter[tuple[str, str, str]],
    displays: dict[tuple[str, str, str], str],
    times: int = 1,
) -> int:
    """Count a record's codings (`times` records alike) if no value set in `wanted` knows
    them; 1 if it was unmapped, else 0."""
    if _recognised(terms, codes, wanted):
        return 0
    for system, code, display in codes or [("", "", "")]:
        key = (kind, system, code)
        counts[key] += times
        if not displays.get(key):
            displays[key] = display or text
    return 1


def unmapped(
    data: Path,
    terms: Terminology,
    wanted: frozenset[str],
    types: frozenset[str] = frozenset(CODE_FIELD),
) -> Report:
    """Count, by (resource type, system, code), the records of `types` no value set in
    `wanted` knows."""
    unknown_types = sorted(types - set(CODE_FIELD))
    if unknown_types:
        raise ValueError(f"not a resource type the report reads: {', '.join(unknown_types)}")
    counts: Counter[tuple[str, str, str]] = Counter()
    displays: dict[tuple[str, str, str], str] = {}
    read = missed = errors = 0
    medications = MedicationTable()
    # Records naming a Medication sent apart, by (type, reference, display): counted at the
    # end, when every Medication of the input has been read.
    later: Counter[tuple[str, str, str]] = Counter()
    for resource, error in _resources(data):
        if resource is None:
            errors += error is not None
            continue
        kind = resource.get("resourceType")
        if kind == "Medication":
            medications.add(resource)
        if kind not in types:
            continue
        read += 1
        if "medicationCodeableConcept" not in resource and (
            reference := medication_reference(resource)
        ):
            display = (resource.get("medicationReference") or {}).get("display")
            later[(str(kind), reference, display if isinstance(display, str) else "")] += 1
            continue
        missed += _count(terms, wanted, str(kind), *codings_of(resource), counts, displays)
    for (kind, reference, display), count in later.items():
        record = {"resourceType": kind, "medicationReference": {"reference": reference}}
        codes, text = codings_of(record, medications)
        unknown = _count(terms, wanted, kind, codes, text or display, counts, displays, count)
        missed += unknown * count
    found = [
        UnmappedCode(
            kind,
            system,
            code,
            displays.get((kind, system, code), ""),
            count,
            tuple(sorted(terms.review_matches(displays.get((kind, system, code))) & wanted)),
        )
        for (kind, system, code), count in counts.items()
    ]
    found.sort(key=lambda row: (-row.count, row.resource_type, row.system, row.code))
    return Report(found, read, missed, errors)
