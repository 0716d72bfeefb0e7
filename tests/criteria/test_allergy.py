"""E3: history of severe drug allergy or hypersensitivity (AllergyIntolerance)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.factories import ANAPHYLAXIS, NKDA, PENICILLIN, SNOMED, allergy

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
