"""AllergyIntolerance -> Allergy."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import Allergy
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import ANAPHYLAXIS, NKDA, PENICILLIN, SNOMED, allergy
from tests.realworld import coding, ehr_allergy, review_terms


def mapped_allergy(resource: dict[str, Any], terms: Terminology) -> Allergy:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, Allergy)
    assert mapped.patient == "Patient/p1"  # from `patient`, not `subject`
    return mapped.fact


def test_maps_category_criticality_and_reaction(terms: Terminology) -> None:
    resource = allergy(
        PENICILLIN,
        criticality="high",
        severity="severe",
        manifestation=ANAPHYLAXIS,
        recorded="2015-03-01",
    )
    found = mapped_allergy(resource, terms)
    assert found.reference == f"AllergyIntolerance/{resource['id']}"
    assert found.category == frozenset({"medication"})
    assert found.criticality == "high"
    assert found.severities == frozenset({"severe"})
    assert "anaphylaxis" in found.manifestations
    assert found.manifestation_codes[0].code == ANAPHYLAXIS
    assert found.recorded == date(2015, 3, 1)
    assert found.negated is False


def test_no_known_drug_allergy_is_a_negation(terms: Terminology) -> None:
    found = mapped_allergy(allergy(NKDA, system=SNOMED), terms)
    assert found.negated is True


@pytest.mark.parametrize(
    ("field", "code"),
    [
        pytest.param("verificationStatus", "refuted", id="refuted"),
        pytest.param("verificationStatus", "entered-in-error", id="entered-in-error"),
    ],
)
def test_records_that_do_not_count_are_dropped(terms: Terminology, field: str, code: str) -> None:
    resource = allergy(PENICILLIN, criticality="high")
    system = "http://terminology.hl7.org/CodeSystem/allergyintolerance-" + (
        "clinical" if field == "clinicalStatus" else "verification"
    )
    resource[field] = {"coding": [{"system": system, "code": code}]}
    assert map_resource(resource, terms) is None


def test_resolved_allergy_is_kept_as_history(terms: Terminology) -> None:
    """A resolved severe reaction is still "history of severe drug allergy" (E3)."""
    resource = allergy(PENICILLIN, criticality="high")
    resource["clinicalStatus"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "resolved",
            }
        ]
    }
    found = mapped_allergy(resource, terms)
    assert (found.clinical_status, found.criticality) == ("resolved", "high")


def test_unconfirmed_allergy_is_kept(terms: Terminology) -> None:
    resource = allergy(PENICILLIN, criticality="high")
    resource["verificationStatus"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "code": "unconfirmed",
            }
        ]
    }
    assert mapped_allergy(resource, terms).criticality == "high"


def test_allergy_without_code_is_kept(terms: Terminology) -> None:
    """AllergyIntolerance.code is optional; a severe reaction to 'something' still matters."""
    resource = allergy(PENICILLIN, criticality="high")
    del resource["code"]
    assert mapped_allergy(resource, terms).codes == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(
            "reaction", [{"manifestation": "hives"}], id="manifestation-not-a-list-of-concepts"
        ),
        pytest.param("recordedDate", "last year", id="recorded-date-text"),
        pytest.param("code", "penicillin", id="code-is-a-string"),
    ],
)
def test_malformed_allergy_raises_mapping_error_naming_it(
    terms: Terminology, field: str, value: Any
) -> None:
    resource = allergy(PENICILLIN)
    resource[field] = value
    with pytest.raises(MappingError, match=f"^AllergyIntolerance/{resource['id']}: "):
        map_resource(resource, terms)


# ------------------------------------------------------------------ as EHRs send them
def test_snomed_finding_without_category_maps_its_concepts(terms: Terminology) -> None:
    resource = ehr_allergy(
        coding("http://snomed.info/sct", "91936005", "Allergy to penicillin"),
        criticality="high",
        verification="confirmed",
    )
    found = mapped_allergy(resource, terms)
    assert found.category == frozenset()
    assert "drug_allergen" in found.concepts
    assert (found.clinical_status, found.verification_status) == ("active", "confirmed")
    assert found.text == "Allergy to penicillin"
    assert found.review == frozenset()


def test_text_only_allergy_gets_review_value_sets() -> None:
    found = mapped_allergy(ehr_allergy(text="青霉素过敏", criticality="high"), review_terms())
    assert (found.codes, found.concepts) == ((), frozenset())
    assert "drug_allergen" in found.review  # (penicillin also reads as an anti-infective)
    assert found.text == "青霉素过敏"


# ------------------------------------------------------------------ statuses as EHRs send them
PENICILLIN_FINDING = coding(SNOMED, "91936005", "Allergy to penicillin")


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"coding": [{"code": "refuted"}]}, id="no-system"),
        pytest.param({"coding": [{"code": "entered_in_error"}]}, id="underscores"),
        pytest.param({"text": "REFUTED"}, id="text-only"),
    ],
)
def test_refuted_without_the_standard_system_is_dropped(
    terms: Terminology, status: dict[str, Any]
) -> None:
    resource = ehr_allergy(PENICILLIN_FINDING, criticality="high", verification=status)
    assert map_resource(resource, terms) is None


def test_clinical_status_without_system_is_read(terms: Terminology) -> None:
    resource = ehr_allergy(PENICILLIN_FINDING, clinical={"coding": [{"code": "resolved"}]})
    assert mapped_allergy(resource, terms).clinical_status == "resolved"


def test_unread_verification_status_is_kept(terms: Terminology) -> None:
    local = {"coding": [{"system": "urn:oid:2.16.840.1.113883.4.642.99", "code": "4"}]}
    resource = ehr_allergy(PENICILLIN_FINDING, criticality="high", verification=local)
    assert mapped_allergy(resource, terms).verification_status == "unread: '4'"
