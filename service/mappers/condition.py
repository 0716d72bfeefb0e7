"""Condition -> Diagnosis.

An abatement[x] without a readable date (abatementBoolean true, abatementString "上周",
abatementAge) marks the diagnosis over on an unknown date (`Diagnosis.abated`). A partial
abatement date ("2021-11") is kept with its last day (`Diagnosis.abatement_last`): the
condition may have lasted until then. An onsetString written as a date is read as one.

A Condition whose codes no value set knows is dropped, unless its text or a display matches a
value set's review terms (or its ICD code is a category above a value set's rows, e.g. `M32`):
then it is kept with `concepts` empty and `review` naming those value sets, so a criterion that
would pass on absence says "possible ...: review" instead ("unmapped is not absent").
"""

from __future__ import annotations

from datetime import date

from service.facts import Diagnosis
from service.mappers.common import (
    CONDITION_CLINICAL,
    CONDITION_CLINICAL_CODES,
    CONDITION_VERIFICATION,
    CONDITION_VERIFICATION_CODES,
    MappingError,
    Resource,
    codes_of,
    concept_text,
    parse_date_span,
    review_of,
    status_code,
)
from service.terminology import Terminology

# Records that assert nothing about the patient (FHIR R4 condition-ver-status).
NOT_COUNTED = frozenset({"refuted", "entered-in-error"})


def map_condition(
    resource: Resource, terms: Terminology, source: str | None = None
) -> Diagnosis | None:
    verification = status_code(
        resource.get("verificationStatus"), CONDITION_VERIFICATION, CONDITION_VERIFICATION_CODES
    )
    if verification in NOT_COUNTED:
        return None
    concept = resource.get("code")
    recorded = codes_of(concept, terms)
    codes, concepts = terms.resolve(recorded)
    review = frozenset() if concepts else review_of(terms, concept, codes, "diagnosis")
    if not recorded and not review:
        # A diagnosis written only as text may be exactly what a criterion excludes: it is
        # reported (and withholds diagnosis-based passes), never silently dropped.
        raise MappingError("diagnosis has no code (text only or empty); review it")
    if not concepts and not review:
        return None
    abatement, abatement_latest = parse_date_span(
        resource.get("abatementDateTime")
        or (resource.get("abatementPeriod") or {}).get("end")
        or (resource.get("abatementPeriod") or {}).get("start")
    )
    if abatement is None:
        abatement, abatement_latest = _date_in(resource.get("abatementString"))
    onset, onset_latest = parse_date_span(
        resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
    )
    recorded_on, recorded_latest = parse_date_span(resource.get("recordedDate"))
    if onset is None:
        onset, onset_latest = _date_in(resource.get("onsetString"))
    return Diagnosis(
        reference=f"Condition/{resource.get('id')}",
        codes=codes,
        concepts=concepts,
        clinical_status=status_code(
            resource.get("clinicalStatus"), CONDITION_CLINICAL, CONDITION_CLINICAL_CODES
        ),
        verification_status=verification,
        onset=onset,
        abatement=abatement,
        abated=abatement is None and _abated_without_date(resource),
        recorded=recorded_on,
        source=source,
        text=concept_text(concept, codes),
        review=review,
        onset_latest=onset_latest,
        abatement_latest=abatement_latest,
        recorded_latest=recorded_latest,
    )


def _abated_without_date(resource: Resource) -> bool:
    """An abatement[x] that says the condition is over but gives no date we read: R4 allows
    a boolean, a string, an Age or a Range besides a dateTime or Period."""
    return (
        resource.get("abatementBoolean") is True
        or bool(resource.get("abatementString"))
        or bool(resource.get("abatementAge"))
        or bool(resource.get("abatementRange"))
    )


def _date_in(text: object) -> tuple[date | None, date | None]:
    """The date an abatementString holds when it is written as one ("2026-11-10", "2021"),
    as (first, last) like `parse_date_span`, else (None, None)."""
    if not isinstance(text, str):
        return None, None
    try:
        return parse_date_span(text.strip())
    except MappingError:
        return None, None
