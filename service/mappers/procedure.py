"""Procedure -> ProcedureRecord."""

from __future__ import annotations

from service.facts import ProcedureRecord
from service.mappers.common import Resource, codes_of, parse_date
from service.terminology import Terminology

COUNTED_STATUSES = frozenset({"completed", "in-progress"})


def map_procedure(
    resource: Resource, terms: Terminology, source: str | None = None
) -> ProcedureRecord | None:
    recorded = codes_of(resource.get("code"))
    if not recorded:
        return None
    codes, concepts = terms.resolve(recorded)
    status = resource.get("status")
    if not concepts or status not in COUNTED_STATUSES:
        return None
    period = resource.get("performedPeriod") or {}
    return ProcedureRecord(
        reference=f"Procedure/{resource.get('id')}",
        codes=codes,
        concepts=concepts,
        performed=parse_date(
            resource.get("performedDateTime") or period.get("end") or period.get("start")
        ),
        status=status,
        source=source,
    )
