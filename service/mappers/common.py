"""Small readers shared by the mappers: dates, codes, references. Pure; no I/O."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from service.errors import DataError
from service.facts import Code, Quantity, unread_status
from service.terminology import HIERARCHICAL, Terminology

__all__ = [
    "MappingError",
    "codes_of",
    "concept_text",
    "parse_date",
    "parse_date_span",
    "parse_timestamp",
    "patient_reference",
    "quantity_of",
    "review_of",
    "status_code",
    "status_word",
]

Resource = dict[str, Any]


# FHIR R4 status code systems and their codes (R5's `presumed` allergy status included).
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_CLINICAL_CODES = frozenset(
    {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}
)
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_VERIFICATION_CODES = frozenset(
    {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
)
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_CLINICAL_CODES = frozenset({"active", "inactive", "resolved"})
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ALLERGY_VERIFICATION_CODES = frozenset(
    {"unconfirmed", "presumed", "confirmed", "refuted", "entered-in-error"}
)


class MappingError(DataError):
    """A resource that is not readable FHIR R4 for our purposes; names the resource."""


def parse_date(value: Any) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant as written (its own time zone).

    A clinician reads "2026-11-20T23:30:00+08:00" as 20 November; converting to UTC would
    move it to the 20th/21st depending on the server. Partial dates ("2024", "2024-05")
    resolve to their first day.
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 4:
        raise MappingError(f"not a FHIR date: {value!r}")
    text = value[:10]
    try:
        if len(text) == 4:
            return date(int(text), 1, 1)
        if len(text) == 7:
            return date(int(text[:4]), int(text[5:7]), 1)
        return date.fromisoformat(text)
    except ValueError as exc:
        raise MappingError(f"not a FHIR date: {value!r}") from exc


def parse_date_span(value: Any) -> tuple[date | None, date | None]:
    """(first day, last day) of a FHIR date/dateTime/instant: the last day only for a partial
    date ("2021" ends on 31 December, "2021-06" on 30 June), else None (facts.written)."""
    first = parse_date(value)
    if first is None or len(value) >= 10:
        return first, None  # a full date: most dates
    if len(value) == 4:
        return first, date(first.year, 12, 31)
    return first, date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])


def parse_timestamp(value: Any) -> datetime | None:
    """The full instant of a FHIR dateTime/instant with its offset ("2026-11-20T23:30:00+08:00").

    None for a date without a time, and for a time without an offset (FHIR requires one;
    a naive time cannot be ordered against the others). Call `parse_date` first: it rejects
    what is not a date at all.
    """
    if not isinstance(value, str) or len(value) <= 10:
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def codes_of(concept: Any, terms: Terminology | None = None) -> list[Code]:
    """The codings of a CodeableConcept (ignores codings without system or code), each under
    its canonical system when `terms` is given (an OID, a name or an edition URI sent as the
    system names the same code system: `Terminology.canonical_system`)."""
    if not concept:
        return []
    if not isinstance(concept, dict):
        raise MappingError("CodeableConcept is not an object")
    found = []
    for coding in concept.get("coding") or ():
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code:
            if terms is not None:
                system = terms.canonical_system(system)
            found.append(Code(system, code, coding.get("display")))
    return found


def status_code(concept: Any, system: str, codes: frozenset[str]) -> str | None:
    """The FHIR code of a status CodeableConcept (clinicalStatus, verificationStatus).

    `system` is the status's code system and `codes` its codes. Read, in order: the code of
    a coding from that system or with no system (many EHRs leave `system` out), the concept's
    `text`, then any coding's `display`, each compared ignoring case, spaces and underscores
    ("Entered in Error" is `entered-in-error`). A code from another system is never taken as
    the standard one: a local "R" may mean refuted or recurrence.

    None when no status was sent. A status sent but not read is returned as
    `unread_status(...)` (facts.UNREAD_STATUS prefix), never None: the record is then kept and
    judged as of uncertain status, neither dropped (had it said refuted) nor counted as
    confirmed and current.
    """
    if not concept:
        return None
    if not isinstance(concept, dict):
        raise MappingError("status CodeableConcept is not an object")
    codings = [c for c in concept.get("coding") or () if isinstance(c, dict)]
    candidates = [c.get("code") for c in codings if c.get("system") in (None, "", system)] + [
        concept.get("text"),
        *(c.get("display") for c in codings),
    ]
    sent = [status_word(c) for c in candidates if isinstance(c, str) and c.strip()]
    found = next((word for word in sent if word in codes), None)
    if found is not None:
        return found
    sent_as = [c.get("code") for c in codings] + [concept.get("text")]
    shown = [s.strip() for s in sent_as if isinstance(s, str) and s.strip()]
    return unread_status(shown[0]) if shown else None


def status_word(text: str) -> str:
    """A status code as sent, in FHIR's spelling: "Entered in Error", "ENTERED_IN_ERROR" and
    "entered-in-error" are one code."""
    return "-".join(text.strip().lower().replace("_", " ").split())


def concept_text(concept: Any, codes: list[Code] | tuple[Code, ...]) -> str | None:
    """What a clinician reads for a CodeableConcept: its `text`, else the first display."""
    text = concept.get("text") if isinstance(concept, dict) else None
    if isinstance(text, str) and text.strip():
        return text.strip()
    return next((c.display for c in codes if c.display), None)


def review_of(
    terms: Terminology,
    concept: Any,
    codes: list[Code] | tuple[Code, ...],
    kind: str | None = None,
) -> frozenset[str]:
    """Value sets a record no value set knows by code may still be about ("unmapped is not
    absent"): those whose review terms its text or any display matches, and, for an ICD or
    ATC code above the rows of a value set (the bare category `M32`), those value sets.

    With `kind` (`diagnosis`, `procedure`, `medication`): a record coded only in code systems
    no table covers (ICD-9-CM, NDC, CPT, a local system) with no text or display to read could
    be anything of that kind, so it is under review for every value set of that kind."""
    text = concept.get("text") if isinstance(concept, dict) else None
    keys = tuple((c.system, c.code) for c in codes)
    if any(system in HIERARCHICAL for system, _ in keys) and not any(
        terms.reads_text_of(system, code) for system, code in keys
    ):
        # ICD-10 and ATC tables list whole categories, so a code they do not reach was left
        # out on purpose (old MI I25.2 is not a severe cardiac disease): its text is not asked.
        # SNOMED CT, RxNorm and local codes may be deeper than a table: their text is; so is
        # a broad history or status category's (Z86.7 for 陈旧性脑梗死: text_read_codes.csv).
        return _review(terms, "", keys)
    words = " | ".join(t for t in [text, *(c.display for c in codes)] if isinstance(t, str))
    found = _review(terms, words, keys)
    if found or kind is None or not keys or words.strip():
        return found
    if any(terms.covers_system(system) for system, _ in keys):
        return found  # a table's code system: a code it does not list is not of its sets
    return terms.valuesets_of_kind(kind)


@lru_cache(maxsize=4096)
def _review(terms: Terminology, words: str, codes: tuple[tuple[str, str], ...]) -> frozenset[str]:
    # A population repeats the same few thousand unmapped codes and texts: match each once.
    found = terms.review_matches(words)
    for system, code in codes:
        found |= terms.concepts_under(system, code)
    return found


def patient_reference(reference: Any) -> str | None:
    """`Patient/<id>` from a Reference, whether relative, absolute or versioned."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    if text.startswith("Patient/") and len(text) > 8 and text.find("/", 8) < 0:
        return text  # relative, as almost every reference is: nothing to take apart
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return f"Patient/{parts[-1]}"
    if text.startswith("urn:uuid:"):
        return text  # resolved against the Bundle's fullUrls by the reader
    return None


def quantity_of(value: Any) -> Quantity | None:
    """A FHIR Quantity; the UCUM `code` is preferred over the free-text `unit`."""
    if not value:
        return None
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float):
        if number is None:
            return None
        raise MappingError(f"Quantity.value is not a number: {number!r}")
    unit = value.get("code") if value.get("system") == "http://unitsofmeasure.org" else None
    unit = unit or value.get("unit") or value.get("code")
    return Quantity(float(number), unit, value.get("comparator"))
