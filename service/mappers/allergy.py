"""AllergyIntolerance -> Allergy."""

from __future__ import annotations

from service.facts import Allergy, Code
from service.mappers.common import Resource, codes_of, parse_date, status_code
from service.terminology import Terminology

NOT_COUNTED = frozenset({"refuted", "entered-in-error"})


def map_allergy(
    resource: Resource, terms: Terminology, source: str | None = None
) -> Allergy | None:
    if status_code(resource.get("verificationStatus")) in NOT_COUNTED:
        return None
    if status_code(resource.get("clinicalStatus")) == "resolved":
        return None  # a resolved allergy (e.g. desensitised) is no longer a hypersensitivity
    codes, concepts = terms.resolve(codes_of(resource.get("code")))
    severities: set[str] = set()
    manifestation_codes: list[Code] = []
    manifestations: set[str] = set()
    for reaction in resource.get("reaction") or ():
        if isinstance(reaction.get("severity"), str):
            severities.add(reaction["severity"])
        for concept in reaction.get("manifestation") or ():
            found, names = terms.resolve(codes_of(concept))
            manifestation_codes.extend(found)
            manifestations |= names
    category = resource.get("category") or []
    return Allergy(
        reference=f"AllergyIntolerance/{resource.get('id')}",
        codes=codes,
        category=frozenset(c for c in category if isinstance(c, str)),
        criticality=resource.get("criticality"),
        severities=frozenset(severities),
        manifestations=frozenset(manifestations),
        manifestation_codes=tuple(manifestation_codes),
        recorded=parse_date(resource.get("recordedDate") or resource.get("onsetDateTime")),
        negated="no_known_allergy" in concepts,
        source=source,
    )
