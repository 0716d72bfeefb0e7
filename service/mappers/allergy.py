"""AllergyIntolerance -> Allergy.

Kept: active, inactive and resolved allergies (a resolved severe reaction is still "history of
severe drug allergy"), with their statuses. Dropped: refuted and entered-in-error records. The
allergen code's value sets go into `concepts`; a code no value set knows keeps the value sets
whose review terms its text matches in `review`.
"""

from __future__ import annotations

from service.facts import Allergy, Code
from service.mappers.common import (
    ALLERGY_CLINICAL,
    ALLERGY_CLINICAL_CODES,
    ALLERGY_VERIFICATION,
    ALLERGY_VERIFICATION_CODES,
    Resource,
    codes_of,
    concept_text,
    parse_date_span,
    review_of,
    status_code,
)
from service.terminology import Terminology

NOT_COUNTED = frozenset({"refuted", "entered-in-error"})


def map_allergy(
    resource: Resource, terms: Terminology, source: str | None = None
) -> Allergy | None:
    verification = status_code(
        resource.get("verificationStatus"), ALLERGY_VERIFICATION, ALLERGY_VERIFICATION_CODES
    )
    if verification in NOT_COUNTED:
        return None
    concept = resource.get("code")
    codes, concepts = terms.resolve(codes_of(concept, terms))
    severities: set[str] = set()
    manifestation_codes: list[Code] = []
    manifestations: set[str] = set()
    for reaction in resource.get("reaction") or ():
        if isinstance(reaction.get("severity"), str):
            severities.add(reaction["severity"])
        for manifestation in reaction.get("manifestation") or ():
            found, names = terms.resolve(codes_of(manifestation, terms))
            manifestation_codes.extend(found)
            manifestations |= names
    category = resource.get("category") or []
    recorded, recorded_latest = parse_date_span(
        resource.get("recordedDate") or resource.get("onsetDateTime")
    )
    return Allergy(
        reference=f"AllergyIntolerance/{resource.get('id')}",
        codes=codes,
        category=frozenset(c for c in category if isinstance(c, str)),
        criticality=resource.get("criticality"),
        severities=frozenset(severities),
        manifestations=frozenset(manifestations),
        manifestation_codes=tuple(manifestation_codes),
        recorded=recorded,
        recorded_latest=recorded_latest,
        negated="no_known_allergy" in concepts,
        source=source,
        concepts=concepts,
        text=concept_text(concept, codes),
        review=frozenset() if concepts else review_of(terms, concept, codes),
        clinical_status=status_code(
            resource.get("clinicalStatus"), ALLERGY_CLINICAL, ALLERGY_CLINICAL_CODES
        ),
        verification_status=verification,
    )
