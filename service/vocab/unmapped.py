"""Codes in a population that no value set of a trial recognises: what a site should map.

Reads the same inputs as `screen` (Bundles, NDJSON; `service.sources`), one resource at a
time, keeping only a counter per distinct code, so a population of any size fits. A record
counts as unmapped when none of its codings (nor the standard code the site code map gives
for one) belongs to a value set the trial reads; each of its codings is then counted, under
its resource type. A record with text but no coding is counted under an empty system and
code, by its text. Review terms (`terms.review_matches`) say which of the trial's value sets
the display or text suggests: the rows to look at first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _concept(resource: dict[str, Any]) -> Any:
    kind = resource.get("resourceType")
    field = CODE_FIELD.get(kind) if isinstance(kind, str) else None
    if field is None:
        return None
    concept = resource.get(field)
    reference = (resource.get("medicationReference") or {}) if kind in MEDICATIONS else {}
    if concept is None and isinstance(reference, dict):
        target = str(reference.get("reference") or "")
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and f"#{contained.get('id')}" == target:
                return contained.get("code")
    return concept


def codings_of(resource: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    """(system, code, display) of the record's code, and its text (tolerant: a malformed
    coding is passed over, as the mappers would report it)."""
    concept = _concept(resource)
    if not isinstance(concept, dict):
        return [], ""
    found = []
    for coding in concept.get("coding") or ():
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code.strip():
            found.append((system, code.strip(), str(coding.get("display") or "")))
    text = concept.get("text")
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
    for resource, error in _resources(data):
        if resource is None:
            errors += error is not None
            continue
        kind = resource.get("resourceType")
        if kind not in types:
            continue
        read += 1
        codes, text = codings_of(resource)
        if _recognised(terms, codes, wanted):
            continue
        missed += 1
        for system, code, display in codes or [("", "", "")]:
            key = (str(kind), system, code)
            counts[key] += 1
            if not displays.get(key):
                displays[key] = display or text
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
