"""Criteria decided by diagnoses: I1 (SLE required) and the diagnosis exclusions
(E2, E4-E9, E11, E13, I7.lactation).

Missing data never decides: a required diagnosis that is absent fails I1 only because the
trial says a recorded SLE diagnosis is the proxy; an exclusion with no matching record passes
with "no record of ...", and becomes `unknown` when Condition records could not be read.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.mappers import problem_for
from tests.conftest import facts_of, run
from tests.factories import (
    AMOXICILLIN,
    BCC,
    BREAST_CANCER,
    CUTANEOUS_LUPUS,
    CVID,
    DRUG_LUPUS,
    ESRD,
    HCG,
    HEART_FAILURE,
    HEMODIALYSIS,
    ICD10,
    ICD10CM,
    LACTATION,
    MELANOMA,
    PNEUMONIA,
    PREGNANCY,
    SCHIZOPHRENIA,
    SLE,
    STROKE,
    TTP,
    ago,
    condition,
    medication,
    obs,
    patient,
    procedure,
)


def unreadable_condition() -> dict[str, Any]:
    """A Condition whose code is not a CodeableConcept: mapping raises, a Problem is kept."""
    resource = condition(SLE)
    resource["code"] = "M32.14"
    return resource


# ------------------------------------------------------------------ I1 SLE diagnosis
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([condition(SLE, onset="2019-04-02")], "pass", id="sle-confirmed-pass"),
        pytest.param(
            [condition(SLE, verification=None)], "pass", id="sle-no-verification-status-pass"
        ),
        pytest.param([condition("M32.14", ICD10CM)], "pass", id="icd10cm-M32.14-pass"),
        pytest.param([condition("M3214", ICD10CM)], "pass", id="icd10cm-M3214-without-dot-pass"),
        pytest.param([condition("M32.1", ICD10)], "pass", id="icd10-M32.1-pass"),
        pytest.param([], "fail", id="no-diagnosis-fail"),
        pytest.param([condition(PNEUMONIA)], "fail", id="other-diagnosis-only-fail"),
        pytest.param([condition(SLE, verification="refuted")], "fail", id="sle-refuted-fail"),
        pytest.param(
            [condition(SLE, verification="entered-in-error")],
            "fail",
            id="sle-entered-in-error-fail",
        ),
        pytest.param(
            [condition(SLE, onset=date(2026, 12, 1))], "fail", id="sle-diagnosed-after-as-of-fail"
        ),
        pytest.param([condition(CUTANEOUS_LUPUS)], "unknown", id="cutaneous-lupus-unknown"),
        pytest.param([condition(DRUG_LUPUS)], "unknown", id="drug-induced-lupus-unknown"),
        pytest.param(
            [condition("M32.0", ICD10CM)], "unknown", id="icd10cm-M32.0-drug-induced-unknown"
        ),
        pytest.param(
            [condition("L93.0", ICD10CM)], "unknown", id="icd10cm-L93.0-discoid-lupus-unknown"
        ),
        pytest.param(
            [condition(SLE, verification="provisional")], "unknown", id="sle-provisional-unknown"
        ),
        pytest.param(
            [condition(SLE, verification="differential")], "unknown", id="sle-differential-unknown"
        ),
        pytest.param([unreadable_condition()], "unknown", id="unreadable-condition-unknown"),
        pytest.param(
            [unreadable_condition(), condition(SLE)],
            "pass",
            id="sle-despite-unreadable-condition-pass",
        ),
        pytest.param(
            [condition(CUTANEOUS_LUPUS), condition(SLE)], "pass", id="sle-and-cutaneous-lupus-pass"
        ),
    ],
)
def test_i1_sle(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I1")
    assert result.verdict == expected, result.reason


def test_i1_resolved_sle_still_counts() -> None:
    """SLE in remission is still SLE (relapse after remission is the trial's population)."""
    assert run([condition(SLE, clinical="remission")], "I1").verdict == "pass"


# ------------------------------------------------------------------ plain history exclusions
SIMPLE_EXCLUSIONS = [
    pytest.param("E2", TTP, id="E2-ttp"),
    pytest.param("E5", STROKE, id="E5-cns"),
    pytest.param("E6", HEART_FAILURE, id="E6-cardiac"),
    pytest.param("E7", CVID, id="E7-immunoglobulin-deficiency"),
    pytest.param("E8", BREAST_CANCER, id="E8-malignancy"),
    pytest.param("E9", ESRD, id="E9-esrd"),
    pytest.param("E11", SCHIZOPHRENIA, id="E11-psychiatric"),
]


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
def test_exclusion_fails_on_confirmed_diagnosis(criterion: str, code: str) -> None:
    dx = condition(code, onset="2020-01-01")
    result = run([dx], criterion)
    assert result.verdict == "fail", result.reason
    assert f"Condition/{dx['id']}" in result.reason


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
def test_exclusion_fails_on_history_even_if_resolved(criterion: str, code: str) -> None:
    dx = condition(code, onset="2010-01-01", abatement="2012-01-01", clinical="resolved")
    assert run([dx], criterion).verdict == "fail"


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
def test_exclusion_passes_without_record(criterion: str, code: str) -> None:
    result = run([condition(SLE)], criterion)
    assert result.verdict == "pass"
    assert result.reason.startswith("no record of")


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
@pytest.mark.parametrize("status", ["provisional", "differential", "unconfirmed"])
def test_exclusion_unconfirmed_diagnosis_unknown(criterion: str, code: str, status: str) -> None:
    result = run([condition(code, verification=status)], criterion)
    assert result.verdict == "unknown"
    assert status in result.reason


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_exclusion_ignores_refuted_and_entered_in_error(
    criterion: str, code: str, status: str
) -> None:
    assert run([condition(code, verification=status)], criterion).verdict == "pass"


@pytest.mark.parametrize(("criterion", "code"), SIMPLE_EXCLUSIONS)
def test_exclusion_unreadable_condition_turns_pass_into_unknown(criterion: str, code: str) -> None:
    result = run([unreadable_condition()], criterion)
    assert result.verdict == "unknown"
    assert "could not be read" in result.reason


def test_unreadable_condition_does_not_hide_a_fail() -> None:
    assert run([unreadable_condition(), condition(TTP)], "E2").verdict == "fail"


def test_problem_for_names_the_patient_of_an_unreadable_resource() -> None:
    mapped = problem_for(unreadable_condition(), "Condition/x: bad code", "file.ndjson:3")
    assert mapped is not None
    assert mapped.patient == "Patient/p1"
    facts = facts_of([])
    facts.add(mapped.fact)
    assert facts.problems_with("Condition")[0].where == "file.ndjson:3"


def test_diagnosis_recorded_after_as_of_does_not_count() -> None:
    assert run([condition(TTP, onset=date(2026, 11, 28))], "E2").verdict == "pass"


# ------------------------------------------------------------------ E4 active infection
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [condition(PNEUMONIA, onset=ago(10))], "fail", id="active-infection-10-days-fail"
        ),
        pytest.param(
            [condition(PNEUMONIA, onset=ago(90))], "fail", id="active-infection-onset-day-90-fail"
        ),
        pytest.param(
            [condition(PNEUMONIA, onset=ago(91))],
            "unknown",
            id="active-infection-onset-day-91-not-recorded-resolved-unknown",
        ),
        pytest.param(
            [condition(PNEUMONIA, onset=ago(91), abatement=ago(60), clinical="resolved")],
            "pass",
            id="infection-onset-day-91-resolved-pass",
        ),
        pytest.param(
            [condition(PNEUMONIA, onset=ago(20), abatement=ago(5), clinical="resolved")],
            "pass",
            id="resolved-infection-pass",
        ),
        pytest.param([condition(PNEUMONIA)], "unknown", id="active-infection-no-onset-unknown"),
        pytest.param(
            [condition(PNEUMONIA, onset=ago(10), verification="provisional")],
            "unknown",
            id="suspected-infection-unknown",
        ),
        pytest.param(
            [medication(AMOXICILLIN, start=ago(3), status="active")],
            "unknown",
            id="active-antibiotic-without-diagnosis-unknown",
        ),
        pytest.param(
            [medication(AMOXICILLIN, start=ago(40), end=ago(30))],
            "pass",
            id="finished-antibiotic-pass",
        ),
        pytest.param([], "pass", id="no-record-pass"),
    ],
)
def test_e4_infection(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E4")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E8 malignancy exceptions
FIVE_YEARS_AGO = date(2021, 11, 27)


@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param(date(2021, 11, 26), "pass", id="disease-free-5-years-and-a-day-pass"),
        pytest.param(FIVE_YEARS_AGO, "fail", id="disease-free-exactly-5-years-fail"),
        pytest.param(date(2024, 1, 1), "fail", id="disease-free-3-years-fail"),
        pytest.param(None, "unknown", id="no-end-date-unknown"),
    ],
)
def test_e8_excepted_cancer(abatement: date | None, expected: str) -> None:
    dx = condition(
        BCC, onset="2015-01-01", abatement=abatement, clinical="resolved" if abatement else "active"
    )
    result = run([dx], "E8")
    assert result.verdict == expected, result.reason


def test_e8_exception_does_not_cover_melanoma() -> None:
    dx = condition(MELANOMA, onset="2000-01-01", abatement="2001-01-01", clinical="resolved")
    assert run([dx], "E8").verdict == "fail"


def test_e8_exception_does_not_cover_invasive_breast_cancer() -> None:
    dx = condition(BREAST_CANCER, onset="2000-01-01", abatement="2001-01-01", clinical="resolved")
    assert run([dx], "E8").verdict == "fail"


def test_e8_excepted_and_other_cancer_fails() -> None:
    old_bcc = condition(BCC, onset="2010-01-01", abatement="2011-01-01", clinical="resolved")
    assert run([old_bcc, condition(BREAST_CANCER)], "E8").verdict == "fail"


def test_e8_only_excepted_cancer_passes_with_evidence() -> None:
    old_bcc = condition(BCC, onset="2010-01-01", abatement="2011-01-01", clinical="resolved")
    result = run([old_bcc], "E8")
    assert result.verdict == "pass"
    assert result.evidence[0].reference == f"Condition/{old_bcc['id']}"


# ------------------------------------------------------------------ E9 ESRD and dialysis
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([procedure(HEMODIALYSIS, days=90)], "fail", id="dialysis-day-90-fail"),
        pytest.param([procedure(HEMODIALYSIS, days=91)], "pass", id="dialysis-day-91-pass"),
        pytest.param(
            [procedure(HEMODIALYSIS, days=3, status="not-done")],
            "pass",
            id="dialysis-not-done-pass",
        ),
        pytest.param(
            [procedure(HEMODIALYSIS, days=3, status="entered-in-error")],
            "pass",
            id="dialysis-entered-in-error-pass",
        ),
        pytest.param([condition(ESRD)], "fail", id="esrd-diagnosis-fail"),
    ],
)
def test_e9_esrd(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E9")
    assert result.verdict == expected, result.reason


def test_e9_unreadable_procedure_is_unknown() -> None:
    broken = procedure(HEMODIALYSIS, days=3)
    broken["performedDateTime"] = "last week"
    result = run([broken], "E9")
    assert result.verdict == "unknown"
    assert "Procedure" in result.reason


# ------------------------------------------------------------------ E13 pregnancy (female)
FEMALE, MALE = patient(gender="female"), patient(gender="male")


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [FEMALE, condition(PREGNANCY, onset=ago(60))], "fail", id="active-pregnancy-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 1200, "m[IU]/mL", days=30)], "fail", id="hcg-positive-day-30-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 1200, "m[IU]/mL", days=31)], "pass", id="hcg-positive-day-31-pass"
        ),
        pytest.param([FEMALE, obs(HCG, 2, "m[IU]/mL", days=3)], "pass", id="hcg-negative-pass"),
        pytest.param(
            [
                FEMALE,
                condition(
                    PREGNANCY, onset="2022-01-01", abatement="2022-09-01", clinical="resolved"
                ),
            ],
            "pass",
            id="past-pregnancy-pass",
        ),
        pytest.param([FEMALE], "pass", id="no-record-pass"),
        pytest.param(
            [FEMALE, condition(PREGNANCY, verification="provisional")],
            "unknown",
            id="provisional-pregnancy-unknown",
        ),
        pytest.param([MALE, condition(PREGNANCY)], "not_applicable", id="male-not-applicable"),
        pytest.param(
            [patient(gender="unknown"), condition(PREGNANCY)],
            "fail",
            id="sex-unknown-is-evaluated-fail",
        ),
        pytest.param([patient(gender=None)], "pass", id="sex-unrecorded-is-evaluated-pass"),
    ],
)
def test_e13_pregnancy(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E13")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ I7 lactation (manual)
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([FEMALE, condition(LACTATION, onset=ago(100))], "fail", id="lactating-fail"),
        pytest.param([FEMALE], "unknown", id="no-record-is-never-pass-unknown"),
        pytest.param(
            [
                FEMALE,
                condition(
                    LACTATION, onset="2023-01-01", abatement="2024-01-01", clinical="resolved"
                ),
            ],
            "unknown",
            id="past-lactation-unknown",
        ),
        pytest.param([MALE], "not_applicable", id="male-not-applicable"),
    ],
)
def test_i7_lactation(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I7.lactation")
    assert result.verdict == expected, result.reason


def test_manual_pass_is_reported_as_unknown_with_what_the_record_shows() -> None:
    result = run([FEMALE], "I7.lactation")
    assert result.reason.startswith(
        "confirmed only at the screening visit; the record shows: no record of"
    )
    assert result.check is not None
