"""Patient -> Demographics."""

from __future__ import annotations

import calendar
from datetime import date

from service.facts import Demographics, Sex
from service.mappers.common import MappingError, Resource, parse_date

SEXES: dict[str, Sex] = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}


def map_patient(resource: Resource) -> Demographics:
    identifier = resource.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise MappingError("Patient has no id")
    raw = resource.get("birthDate")
    earliest = parse_date(raw)
    latest = earliest
    if earliest is not None and isinstance(raw, str):
        # A partial birth date is a range: "1980" is any day of 1980.
        if len(raw) == 4:
            latest = date(earliest.year, 12, 31)
        elif len(raw) == 7:
            last = calendar.monthrange(earliest.year, earliest.month)[1]
            latest = date(earliest.year, earliest.month, last)
    gender = resource.get("gender")
    return Demographics(
        reference=f"Patient/{identifier}",
        birth_date=earliest,
        birth_date_latest=latest,
        sex=SEXES.get(gender) if isinstance(gender, str) else None,
    )
