"""Patient -> Demographics: birth date (a range when partial), sex, death, business identifiers.

- `deceasedBoolean: true` or any `deceasedDateTime` marks the patient deceased; the date is
  kept when sent (the engine decides whether the death is on or before `as_of`).
- `identifier`: every identifier with a value, as the EHR shows it (value, system, the
  `type` code such as MR, and the type's text or display), except those whose `use` is `old`
  (a number the hospital no longer uses would send a coordinator to the wrong chart).
- `name`: one line (`display_name`): the official name, else the usual one, else the first
  not marked `old`; its `text` when sent, else given names then family.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from service.facts import Demographics, Identifier, Sex
from service.mappers.common import MappingError, Resource, codes_of, parse_date_span

SEXES: dict[str, Sex] = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
# The identifier type code system (HL7 v2 table 0203: MR, PI, NI ...) is preferred.
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def map_patient(resource: Resource) -> Demographics:
    identifier = resource.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise MappingError("Patient has no id")
    # A partial birth date is a range: "1980" is any day of 1980.
    earliest, latest = parse_date_span(resource.get("birthDate"))
    gender = resource.get("gender")
    deceased, deceased_date, deceased_latest = _deceased(resource)
    return Demographics(
        reference=f"Patient/{identifier}",
        birth_date=earliest,
        birth_date_latest=latest or earliest,
        sex=SEXES.get(gender) if isinstance(gender, str) else None,
        deceased=deceased,
        deceased_date=deceased_date,
        identifiers=_identifiers(resource.get("identifier")),
        name=display_name(resource.get("name")),
        deceased_date_latest=deceased_latest,
    )


def display_name(names: Any) -> str | None:
    """Patient.name as one line a coordinator reads, or None: the `official` HumanName, else
    the `usual`, else the first not `old`; its `text`, else given names then family. Tolerant
    of malformed entries (a name is for display, never for a verdict)."""
    if not isinstance(names, list):
        return None
    entries = [n for n in names if isinstance(n, dict) and n.get("use") != "old"]
    chosen = next(
        (n for use in ("official", "usual") for n in entries if n.get("use") == use),
        entries[0] if entries else None,
    )
    if chosen is None:
        return None
    text = chosen.get("text")
    if isinstance(text, str) and text.strip():
        return " ".join(text.split())
    given = chosen.get("given")
    parts = [g for g in given if isinstance(g, str)] if isinstance(given, list) else []
    family = chosen.get("family")
    if isinstance(family, str):
        parts.append(family)
    line = " ".join(" ".join(parts).split())
    return line or None


def _deceased(resource: Resource) -> tuple[bool, date | None, date | None]:
    """(deceased, first and last possible day of death): deceasedDateTime wins over
    deceasedBoolean; the last day only for a partial date ("2026")."""
    when = resource.get("deceasedDateTime")
    if when is not None:
        return True, *parse_date_span(when)
    flag = resource.get("deceasedBoolean")
    if flag is None:
        return False, None, None
    if not isinstance(flag, bool):
        raise MappingError(f"deceasedBoolean is not a boolean: {flag!r}")
    return flag, None, None


def _identifiers(raw: Any) -> tuple[Identifier, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MappingError("Patient.identifier is not a list")
    found = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise MappingError("Patient.identifier is not an object")
        value = entry.get("value")
        if not isinstance(value, str) or not value.strip() or entry.get("use") == "old":
            continue
        system = entry.get("system")
        kind = entry.get("type")
        codes = codes_of(kind)
        code = next((c for c in codes if c.system == V2_0203), codes[0] if codes else None)
        label = kind.get("text") if isinstance(kind, dict) else None
        found.append(
            Identifier(
                value=value.strip(),
                system=system if isinstance(system, str) else None,
                type=code.code if code else None,
                label=label if isinstance(label, str) else (code.display if code else None),
            )
        )
    return tuple(found)
