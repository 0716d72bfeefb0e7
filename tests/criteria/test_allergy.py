"""E3: history of severe drug allergy or hypersensitivity (AllergyIntolerance, Condition)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.factories import ANAPHYLAXIS, NKDA, PENICILLIN, SNOMED, allergy
from tests.realworld import LOCAL, coding, ehr_allergy, ehr_condition, run_ehr

PEANUT = "256349002"  # SNOMED CT substance; a food, never a drug allergy


def status(resource: dict[str, Any], field: str, code: str) -> dict[str, Any]:
    system = "http://terminology.hl7.org/CodeSystem/allergyintolerance-" + (
        "clinical" if field == "clinicalStatus" else "verification"
    )
    resource[field] = {"coding": [{"system": system, "code": code}]}
    return resource


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([allergy(PENICILLIN, criticality="high")], "fail", id="high-criticality-fail"),
        pytest.param([allergy(PENICILLIN, severity="severe")], "fail", id="severe-reaction-fail"),
        pytest.param(
            [allergy(PENICILLIN, manifestation=ANAPHYLAXIS, severity="moderate")],
            "fail",
            id="anaphylaxis-fail",
        ),
        pytest.param([allergy(PENICILLIN)], "unknown", id="severity-not-recorded-unknown"),
        pytest.param(
            [allergy(PENICILLIN, criticality="unable-to-assess")],
            "unknown",
            id="criticality-unable-to-assess-unknown",
        ),
        pytest.param([allergy(PENICILLIN, criticality="low")], "pass", id="low-criticality-pass"),
        pytest.param([allergy(PENICILLIN, severity="mild")], "pass", id="mild-reaction-pass"),
        pytest.param(
            [allergy(NKDA, system=SNOMED, category=None)], "pass", id="no-known-drug-allergy-pass"
        ),
        pytest.param(
            [allergy(PEANUT, system=SNOMED, category="food", criticality="high")],
            "pass",
            id="severe-food-allergy-is-not-a-drug-allergy-pass",
        ),
        pytest.param(
            [allergy(PENICILLIN, category=None, criticality="high")],
            "fail",
            id="rxnorm-coded-without-category-is-a-drug-fail",
        ),
        pytest.param(
            [status(allergy(PENICILLIN, criticality="high"), "verificationStatus", "refuted")],
            "pass",
            id="refuted-pass",
        ),
        pytest.param(
            [
                status(
                    allergy(PENICILLIN, criticality="high"),
                    "verificationStatus",
                    "entered-in-error",
                )
            ],
            "pass",
            id="entered-in-error-pass",
        ),
        pytest.param(
            [status(allergy(PENICILLIN, criticality="high"), "clinicalStatus", "resolved")],
            "fail",
            id="resolved-severe-allergy-is-history-fail",
        ),
        pytest.param([], "pass", id="no-record-pass"),
    ],
)
def test_e3_drug_allergy(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E3")
    assert result.verdict == expected, result.reason


def test_e3_no_record_reason() -> None:
    assert run([], "E3").reason == "no record of drug allergy"


def test_e3_mild_allergies_are_shown() -> None:
    mild = allergy(PENICILLIN, criticality="low")
    result = run([mild], "E3")
    assert [e.reference for e in result.evidence] == [f"AllergyIntolerance/{mild['id']}"]


def test_e3_unreadable_allergy_turns_pass_into_unknown() -> None:
    broken = allergy(PENICILLIN, criticality="low")
    broken["reaction"] = "anaphylaxis"  # not a list of reactions
    result = run([broken], "E3")
    assert result.verdict == "unknown"
    assert "AllergyIntolerance" in result.reason


# ================================================================== records as EHRs send them
# No `category`; SNOMED CT findings and substances, clinical-drug RxNorm codes, Chinese text.
SCT = "http://snomed.info/sct"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
PENICILLIN_ALLERGY = coding(SCT, "91936005", "Allergy to penicillin")  # drug_allergen
AMOXICILLIN_250_CAP = coding(RX, "308182", "amoxicillin 250 MG Oral Capsule")  # clinical drug
PEANUT_SUBSTANCE = coding(SCT, PEANUT, "Peanut (substance)")


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high")],
            "fail",
            id="snomed-finding-no-category-high-fail",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, severity="severe", reaction_text="过敏性休克")],
            "fail",
            id="snomed-finding-severe-reaction-fail",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY)],
            "unknown",
            id="snomed-finding-severity-unrecorded-unknown",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="low", severity="mild")],
            "pass",
            id="snomed-finding-mild-pass",
        ),
        pytest.param(
            [ehr_allergy(AMOXICILLIN_250_CAP, severity="severe")],
            "fail",
            id="rxnorm-clinical-drug-no-category-fail",
        ),
        pytest.param(
            [ehr_allergy(PEANUT_SUBSTANCE, criticality="high")],
            "pass",
            id="food-substance-no-category-pass",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high", clinical="resolved")],
            "fail",
            id="resolved-severe-drug-allergy-is-history-fail",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high", clinical="inactive")],
            "fail",
            id="inactive-severe-drug-allergy-is-history-fail",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high", verification="refuted")],
            "pass",
            id="refuted-pass",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high", verification="entered-in-error")],
            "pass",
            id="entered-in-error-pass",
        ),
        pytest.param(
            [ehr_allergy(PENICILLIN_ALLERGY, criticality="high", recorded="2026-12-20")],
            "pass",
            id="recorded-after-as-of-pass",
        ),
        pytest.param(
            [ehr_allergy(text="青霉素过敏", criticality="high")],
            "unknown",
            id="text-only-chinese-penicillin-high-unknown",
        ),
        pytest.param(
            [ehr_allergy(coding(LOCAL, "GM-009", "磺胺类药物"), severity="mild")],
            "pass",
            id="unmapped-drug-text-mild-pass",
        ),
        pytest.param(
            [ehr_allergy(coding(LOCAL, "GM-010", "花粉"), criticality="high")],
            "pass",
            id="unmapped-non-drug-text-pass",
        ),
    ],
)
def test_e3_allergies_as_recorded(resources: list[dict[str, Any]], expected: str) -> None:
    result = run_ehr(resources, "E3")
    assert result.verdict == expected, result.reason


# An allergy without a category whose allergen no table classifies (an unlisted SNOMED CT
# substance, a local code without text) may be a drug: never a pass on its own.
UNLISTED_SUBSTANCE = coding(SCT, "387207008")  # ibuprofen (substance), not in drug_allergen


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_allergy(UNLISTED_SUBSTANCE, reaction_text="anaphylaxis", severity="severe"),
            "unknown",
            id="unlisted-substance-severe-unknown",
        ),
        pytest.param(
            ehr_allergy(UNLISTED_SUBSTANCE), "unknown", id="unlisted-substance-unrecorded-unknown"
        ),
        pytest.param(
            ehr_allergy(UNLISTED_SUBSTANCE, criticality="low", severity="mild"),
            "pass",
            id="unlisted-substance-mild-pass",
        ),
        pytest.param(
            ehr_allergy(coding(LOCAL, "AL-77"), criticality="high"),
            "unknown",
            id="local-code-no-text-high-unknown",
        ),
        pytest.param(
            ehr_allergy(coding(SCT, "300916003"), criticality="high"),
            "pass",
            id="latex-allergy-finding-no-category-pass",
        ),
        pytest.param(
            ehr_allergy(text="芒果", criticality="high"), "pass", id="mango-text-no-category-pass"
        ),
        pytest.param(
            ehr_allergy(text="Shellfish", severity="severe"), "pass", id="shellfish-text-pass"
        ),
    ],
)
def test_e3_unclassified_allergens(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E3")
    assert result.verdict == expected, result.reason


def test_e3_unclassified_allergen_with_a_category_is_not_unclassified() -> None:
    food = ehr_allergy(UNLISTED_SUBSTANCE, criticality="high")
    food["category"] = ["food"]
    assert run_ehr([food], "E3").verdict == "pass"
    drug = ehr_allergy(UNLISTED_SUBSTANCE, criticality="high")
    drug["category"] = ["medication"]
    assert run_ehr([drug], "E3").verdict == "fail"


def test_e3_unclassified_allergen_reason() -> None:
    result = run_ehr([ehr_allergy(UNLISTED_SUBSTANCE, criticality="high")], "E3")
    assert "allergy to 'http://snomed.info/sct 387207008' without a category" in result.reason
    assert "not known whether the allergen is a drug: review" in result.reason


def test_e3_history_of_resolved_allergy_is_named() -> None:
    resolved = ehr_allergy(PENICILLIN_ALLERGY, criticality="high", clinical="resolved")
    result = run_ehr([resolved], "E3")
    assert "history of: clinical status resolved" in result.reason


def test_e3_unmapped_drug_allergy_reason() -> None:
    result = run_ehr([ehr_allergy(text="青霉素过敏", criticality="high")], "E3")
    assert result.reason == (
        "possible Drug allergens (SNOMED CT substances and drug-allergy findings): "
        "'青霉素过敏' (no code, not in the value set): review"
    )


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(coding(SCT, "73442001", "Stevens-Johnson syndrome"), onset="2018-07-01"),
            "fail",
            id="sjs-snomed-condition-fail",
        ),
        pytest.param(
            ehr_condition(
                coding("http://hl7.org/fhir/sid/icd-10-cm", "L51.2"),
                text="中毒性表皮坏死松解症",
                clinical="resolved",
                abatement="2016-01-01",
            ),
            "fail",
            id="resolved-ten-icd-condition-is-history-fail",
        ),
        pytest.param(
            ehr_condition(coding("http://hl7.org/fhir/sid/icd-10-cm", "Z88.0")),
            "fail",
            id="penicillin-allergy-status-z88-fail",
        ),
        pytest.param(
            ehr_condition(coding(SCT, "702809001"), verification="provisional"),
            "unknown",
            id="provisional-dress-unknown",
        ),
        pytest.param(
            ehr_condition(coding(LOCAL, "PF-31"), text="Stevens-Johnson syndrome due to drug"),
            "unknown",
            id="unmapped-sjs-text-unknown",
        ),
        pytest.param(
            ehr_condition(coding(SCT, "73442001"), onset="2027-01-05"),
            "pass",
            id="sjs-after-as-of-pass",
        ),
    ],
)
def test_e3_drug_hypersensitivity_recorded_as_a_condition(
    resource: dict[str, Any], expected: str
) -> None:
    result = run_ehr([resource], "E3")
    assert result.verdict == expected, result.reason


# Statuses as EHRs send them: no `system`, text only, or a local code that cannot be read.
LOCAL_VERIFICATION = {"coding": [{"system": "urn:oid:1.2.156.112635.1.1.4", "code": "9"}]}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_allergy(
                coding(RX, "7980", "penicillin G"),
                criticality="high",
                verification={"coding": [{"code": "refuted"}]},
            ),
            "pass",
            id="refuted-without-system-pass",
        ),
        pytest.param(
            ehr_allergy(PENICILLIN_ALLERGY, criticality="high", verification={"text": "Refuted"}),
            "pass",
            id="refuted-as-text-pass",
        ),
        pytest.param(
            ehr_allergy(PENICILLIN_ALLERGY, criticality="high", verification=LOCAL_VERIFICATION),
            "unknown",
            id="local-verification-severe-unknown",
        ),
        pytest.param(
            ehr_allergy(
                PENICILLIN_ALLERGY,
                criticality="high",
                clinical={"coding": [{"code": "resolved"}]},
                verification={"coding": [{"code": "confirmed"}]},
            ),
            "fail",
            id="resolved-without-system-is-history-fail",
        ),
        pytest.param(
            ehr_allergy(
                PENICILLIN_ALLERGY,
                criticality="low",
                severity="mild",
                verification=LOCAL_VERIFICATION,
            ),
            "pass",
            id="local-verification-mild-pass",
        ),
    ],
)
def test_e3_statuses_as_ehrs_send_them(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E3")
    assert result.verdict == expected, result.reason


def test_e3_unread_verification_reason() -> None:
    resource = ehr_allergy(PENICILLIN_ALLERGY, criticality="high", verification=LOCAL_VERIFICATION)
    assert "verification status unread: '9'; confirm" in run_ehr([resource], "E3").reason
