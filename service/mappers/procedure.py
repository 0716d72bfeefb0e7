"""Procedure -> ProcedureRecord.

Completed and in-progress procedures whose code a value set knows. Unmapped is not absent: one
whose codes no value set knows (CPT, ICD-10-PCS, a local code, text only) is kept when its text
or a display matches a value set's review terms (a haemodialysis coded in CPT, "血液透析"): it
then has no `concepts`, only `review`, and E9 says "possible ...: review". `performed` is the
dateTime or the period's end (else start); performedString/Age/Range leave it None.
"""

from __future__ import annotations

from service.facts import ProcedureRecord
from service.mappers.common import Resource, codes_of, concept_text, parse_date_span, review_of
from service.terminology import Terminology

COUNTED_STATUSES = frozenset({"completed", "in-progress"})


def map_procedure(
    resource: Resource, terms: Terminology, source: str | None = None
) -> ProcedureRecord | None:
    if resource.get("status") not in COUNTED_STATUSES:
        return None
    concept = resource.get("code")
    recorded = codes_of(concept, terms)
    codes, concepts = terms.resolve(recorded)
    review = frozenset() if concepts else review_of(terms, concept, codes, "procedure")
    if not concepts and not review:
        return None
    period = resource.get("performedPeriod") or {}
    performed, performed_latest = parse_date_span(
        resource.get("performedDateTime") or period.get("end") or period.get("start")
    )
    return ProcedureRecord(
        reference=f"Procedure/{resource.get('id')}",
        codes=codes,
        concepts=concepts,
        performed=performed,
        status=resource["status"],
        source=source,
        text=concept_text(concept, codes),
        review=review,
        performed_latest=performed_latest,
    )
