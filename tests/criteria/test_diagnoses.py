"""Criteria decided by diagnoses: I1 (SLE required) and the diagnosis exclusions
(E2, E4-E9, E11, E13, I7.lactation).

Missing data never decides: a required diagnosis that is absent fails I1 only because the
trial says a recorded SLE diagnosis is the proxy; an exclusion with no matching record passes
with "no record of ...", and becomes `unknown` when Condition records could not be read.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from service.facts import Code, Diagnosis, MedicationExposure
from service.mappers import problem_for
from tests.conftest import AS_OF, facts_of, run
from tests.criteria.realworld import judge, lab
from tests.criteria.realworld import patient as lab_patient
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
from tests.realworld import (
    LOCAL,
    coding,
    ehr_condition,
    ehr_observation,
    ehr_procedure,
    notes,
    run_ehr,
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


# ================================================================== records as EHRs send them
# Raw Condition JSON (problem-list category, several codings, Chinese text, offsets) through the
# mapper, then the engine, with review terms loaded (tests/realworld.py).
SCT_URI, ICD10CM_URI = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"
UNLISTED_SNOMED = "1287654001"  # a code no value set lists (synthetic)


# ------------------------------------------------------------------ I1: unmapped SLE
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(
                coding(SCT_URI, UNLISTED_SNOMED, "Lupus nephritis, ISN/RPS class IV-G"),
                onset="2021-05-10T08:00:00+08:00",
            ),
            "unknown",
            id="unlisted-snomed-lupus-nephritis-unknown",
        ),
        pytest.param(
            ehr_condition(coding(LOCAL, "ZD-0233"), text="系统性红斑狼疮（SLE）"),  # noqa: RUF001
            "unknown",
            id="local-code-chinese-text-unknown",
        ),
        pytest.param(
            ehr_condition(coding(ICD10CM_URI, "M32")), "unknown", id="bare-icd-category-M32-unknown"
        ),
        pytest.param(
            ehr_condition(coding(LOCAL, "ZD-0101"), text="原发性高血压"),
            "fail",
            id="unlisted-code-unrelated-text-fail",
        ),
        pytest.param(
            ehr_condition(
                coding(LOCAL, "ZD-0233"),
                coding(SCT_URI, SLE, "Systemic lupus erythematosus"),
                text="系统性红斑狼疮",
            ),
            "pass",
            id="local-code-beside-listed-snomed-pass",
        ),
    ],
)
def test_i1_unmapped_sle_is_never_fail(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "I1")
    assert result.verdict == expected, result.reason


def test_i1_review_reason_names_display_system_and_code() -> None:
    resource = ehr_condition(coding(SCT_URI, UNLISTED_SNOMED, "Lupus nephritis, class IV"))
    result = run_ehr([resource], "I1")
    assert result.reason == (
        "possible Systemic lupus erythematosus (established diagnosis): 'Lupus nephritis, class "
        f"IV' (SNOMED CT {UNLISTED_SNOMED}, not in the value set): review"
    )
    assert result.evidence[0].reference == f"Condition/{resource['id']}"


def test_i1_recorded_only_after_as_of_did_not_exist_yet() -> None:
    resource = ehr_condition(coding(SCT_URI, SLE), recorded="2026-12-03T10:00:00+08:00")
    assert run_ehr([resource], "I1").verdict == "fail"
    assert run_ehr([resource], "I1", as_of=date(2026, 12, 3)).verdict == "pass"


def test_i1_history_entered_after_as_of_with_earlier_onset_counts() -> None:
    resource = ehr_condition(
        coding(SCT_URI, SLE), onset="2019-04-02", recorded="2026-12-03T10:00:00+08:00"
    )
    assert run_ehr([resource], "I1").verdict == "pass"


# ------------------------------------------------------------------ E2: unmapped TTP
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(coding(LOCAL, "XY-77"), text="血栓性血小板减少性紫癜（已治愈）"),  # noqa: RUF001
            "unknown",
            id="chinese-text-local-code-unknown",
        ),
        pytest.param(
            ehr_condition(
                coding(SCT_URI, UNLISTED_SNOMED, "Acquired thrombotic thrombocytopenic purpura"),
                clinical="resolved",
                abatement="2019-06-01",
            ),
            "unknown",
            id="resolved-unlisted-code-is-still-history-unknown",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, TTP), clinical="resolved", abatement="2019-06-01"),
            "fail",
            id="resolved-listed-ttp-is-history-fail",
        ),
        pytest.param(
            ehr_condition(coding(LOCAL, "XY-78"), text="缺铁性贫血"),
            "pass",
            id="unrelated-unmapped-record-pass",
        ),
    ],
)
def test_e2_unmapped_is_not_absent(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E2")
    assert result.verdict == expected, result.reason


def test_e2_refuted_unmapped_record_does_not_count() -> None:
    resource = ehr_condition(
        coding(LOCAL, "XY-77"), text="血栓性血小板减少性紫癜", verification="refuted"
    )
    assert run_ehr([resource], "E2").verdict == "pass"


# ------------------------------------------------------------------ E4: infections
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [ehr_condition(coding(ICD10CM_URI, "B35.3", "Tinea pedis"), onset=f"{ago(10)}")],
            "unknown",
            id="tinea-pedis-is-superficial-unknown",
        ),
        pytest.param(
            [ehr_condition(coding(ICD10CM_URI, "B00.1"), text="单纯疱疹-唇", onset=f"{ago(5)}")],
            "unknown",
            id="herpes-labialis-is-superficial-unknown",
        ),
        pytest.param(
            [ehr_condition(coding(ICD10CM_URI, "B37.7", "Candidal sepsis"), onset=f"{ago(5)}")],
            "fail",
            id="candidal-sepsis-is-not-superficial-fail",
        ),
        pytest.param(
            [
                ehr_condition(
                    coding(SCT_URI, PNEUMONIA),
                    clinical="resolved",
                    onset=f"{ago(20)}T07:00:00+08:00",
                    abatement=f"{AS_OF + timedelta(days=10)}T10:00:00+08:00",
                )
            ],
            "fail",
            id="abatement-after-as-of-was-active-then-fail",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PNEUMONIA), onset=f"{ago(200)}")],
            "unknown",
            id="active-infection-older-than-window-unknown",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PNEUMONIA), clinical="resolved", onset=f"{ago(200)}")],
            "pass",
            id="old-infection-recorded-resolved-pass",
        ),
        pytest.param(
            [ehr_condition(coding(LOCAL, "GR-12"), text="社区获得性肺炎", onset=f"{ago(3)}")],
            "unknown",
            id="unmapped-chinese-pneumonia-unknown",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PNEUMONIA), onset=f"{AS_OF + timedelta(days=2)}")],
            "pass",
            id="infection-after-as-of-did-not-exist-yet-pass",
        ),
    ],
)
def test_e4_real_world_infections(resources: list[dict[str, Any]], expected: str) -> None:
    result = run_ehr(resources, "E4")
    assert result.verdict == expected, result.reason


def test_e4_superficial_reason_says_it_does_not_exclude() -> None:
    result = run_ehr([ehr_condition(coding(ICD10CM_URI, "B35.1"), onset=f"{ago(10)}")], "E4")
    assert "Superficial infection does not exclude by itself" in result.reason


@pytest.mark.parametrize(
    ("med", "expected"),
    [
        pytest.param(
            medication(AMOXICILLIN, start="1980-03-01", status="completed"),
            "pass",
            id="antibiotic-from-1980-is-not-current-pass",
        ),
        pytest.param(
            medication(AMOXICILLIN, start=ago(2), status="active", kind="MedicationRequest"),
            "unknown",
            id="antibiotic-ordered-2-days-ago-unknown",
        ),
        pytest.param(
            medication(AMOXICILLIN, start=ago(40), end=ago(33)),
            "pass",
            id="antibiotic-course-ended-pass",
        ),
    ],
)
def test_e4_suspected_infection_uses_exposure(med: dict[str, Any], expected: str) -> None:
    assert run_ehr([med], "E4").verdict == expected


def _unmapped_medication(start: date, status: str = "active") -> MedicationExposure:
    return MedicationExposure(
        reference="MedicationRequest/local-amox",
        codes=(Code(LOCAL, "YP-0031", "阿莫西林胶囊 0.25g"),),
        concepts=frozenset(),
        status=status,
        start=start,
        end=None,
        resource_type="MedicationRequest",
        text="阿莫西林胶囊 0.25g",
        review=frozenset({"anti_infectives_systemic"}),
    )


def test_e4_unmapped_anti_infective_taken_now_is_unknown() -> None:
    result = run_ehr([], "E4", extra=[_unmapped_medication(ago(1))])
    assert result.verdict == "unknown"
    assert result.reason.startswith("possible Systemic anti-infectives")
    assert "not in the value set" in result.reason


def test_e4_unmapped_anti_infective_long_finished_passes() -> None:
    result = run_ehr([], "E4", extra=[_unmapped_medication(date(2001, 1, 1), "completed")])
    assert result.verdict == "pass"


# ------------------------------------------------------------------ E5: transient CNS events
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(
                coding(ICD10CM_URI, "A87.9", "Viral meningitis, unspecified"),
                clinical="resolved",
                onset="2015-03-02",
                abatement="2015-04-01",
            ),
            "pass",
            id="meningitis-resolved-11-years-ago-pass",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10CM_URI, "G00.1"),
                clinical="resolved",
                onset="2025-01-02",
                abatement="2025-02-01",
            ),
            "fail",
            id="meningitis-resolved-under-2-years-ago-fail",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10CM_URI, "G00.1"),
                clinical="resolved",
                onset="2024-11-20",
                abatement="2024-11-26",
            ),
            "pass",
            id="resolved-2-years-and-a-day-pass",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10CM_URI, "G00.1"),
                clinical="resolved",
                onset="2024-11-20",
                abatement="2024-11-27",
            ),
            "fail",
            id="resolved-exactly-2-years-fail",
        ),
        pytest.param(
            ehr_condition(coding(ICD10CM_URI, "G93.41"), clinical="resolved", onset="2012-05-01"),
            "unknown",
            id="metabolic-encephalopathy-resolved-undated-unknown",
        ),
        pytest.param(
            ehr_condition(coding(ICD10CM_URI, "A87.9"), onset="2025-06-01"),
            "fail",
            id="meningitis-active-since-2025-fail",
        ),
        # begun more than 2 years before, never recorded over: it may have been over that long
        pytest.param(
            ehr_condition(coding(ICD10CM_URI, "A87.9"), onset="2012-05-01"),
            "unknown",
            id="meningitis-active-since-2012-never-recorded-over-unknown",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, STROKE), clinical="resolved", abatement="2010-01-01"),
            "fail",
            id="old-stroke-still-excludes-fail",
        ),
    ],
)
def test_e5_transient_cns_events(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E5")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E8: excepted, no end date
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(coding(SCT_URI, BCC), onset="2015-01-01"),
            "unknown",
            id="history-of-excepted-cancer-recorded-active-unknown",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, BCC), clinical="resolved", onset="2015-01-01"),
            "unknown",
            id="excepted-cancer-resolved-undated-unknown",
        ),
        pytest.param(
            ehr_condition(
                coding(SCT_URI, BCC),
                clinical="resolved",
                onset="2015-01-01",
                abatement=f"{AS_OF + timedelta(days=30)}",
            ),
            "unknown",
            id="excepted-cancer-over-only-after-as-of-unknown",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, BCC), clinical="resolved", abatement="2016-02-01"),
            "pass",
            id="excepted-cancer-over-10-years-pass",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, MELANOMA), clinical="resolved", abatement="2010-02-01"),
            "fail",
            id="melanoma-is-never-excepted-fail",
        ),
    ],
)
def test_e8_excepted_cancers_as_recorded(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E8")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E13 / I7.lactation: stale
PREGNANCY_STATUS = "82810-3"
PREGNANT, NOT_PREGNANT = (
    coding(SCT_URI, "77386006", "Pregnant"),
    coding(SCT_URI, "60001007", "Not pregnant"),
)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [ehr_condition(coding(SCT_URI, PREGNANCY), clinical=None, onset=f"{ago(100)}")],
            "fail",
            id="no-status-pregnancy-day-100-fail",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PREGNANCY), clinical=None, onset=f"{ago(300)}")],
            "fail",
            id="no-status-pregnancy-day-300-fail",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PREGNANCY), clinical=None, onset=f"{ago(301)}")],
            "pass",
            id="no-status-pregnancy-day-301-not-current-pass",
        ),
        pytest.param(
            [ehr_condition(coding(ICD10CM_URI, "Z34.90"), clinical=None, recorded=f"{ago(400)}")],
            "pass",
            id="no-status-recorded-400-days-ago-pass",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PREGNANCY), onset=f"{ago(400)}")],
            "unknown",
            id="recorded-active-for-400-days-unknown",
        ),
        pytest.param(
            [ehr_condition(coding(SCT_URI, PREGNANCY), clinical=None)],
            "unknown",
            id="no-status-no-date-unknown",
        ),
        pytest.param(
            [
                ehr_condition(
                    coding(SCT_URI, PREGNANCY),
                    clinical="resolved",
                    onset=f"{ago(200)}",
                    abatement=f"{AS_OF + timedelta(days=60)}",
                )
            ],
            "fail",
            id="delivery-after-as-of-was-pregnant-then-fail",
        ),
        pytest.param(
            [ehr_observation(PREGNANCY_STATUS, PREGNANT, effective=f"{ago(10)}T09:00:00+08:00")],
            "fail",
            id="pregnancy-status-pregnant-fail",
        ),
        pytest.param(
            [ehr_observation(PREGNANCY_STATUS, PREGNANT, effective=f"{ago(31)}")],
            "pass",
            id="pregnancy-status-pregnant-31-days-ago-pass",
        ),
        pytest.param(
            [ehr_observation(PREGNANCY_STATUS, NOT_PREGNANT, effective=f"{ago(3)}")],
            "pass",
            id="pregnancy-status-not-pregnant-pass",
        ),
    ],
)
def test_e13_pregnancy_as_recorded(resources: list[dict[str, Any]], expected: str) -> None:
    result = run_ehr([FEMALE, *resources], "E13")
    assert result.verdict == expected, result.reason


def test_e13_not_pregnant_answer_is_shown() -> None:
    answer = ehr_observation(PREGNANCY_STATUS, NOT_PREGNANT, effective=f"{ago(3)}")
    result = run_ehr([FEMALE, answer], "E13")
    assert result.verdict == "pass"
    assert [e.reference for e in result.evidence] == [f"Observation/{answer['id']}"]


def test_e13_stale_pregnancy_is_shown_not_counted() -> None:
    stale = ehr_condition(coding(SCT_URI, PREGNANCY), clinical=None, onset="2023-02-01")
    result = run_ehr([FEMALE, stale], "E13")
    assert result.verdict == "pass"
    assert "counted for 300 days after 2023-02-01 only" in notes(result)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_condition(coding(SCT_URI, LACTATION), clinical=None, onset=f"{ago(700)}"),
            "fail",
            id="no-status-lactation-day-700-fail",
        ),
        pytest.param(
            ehr_condition(coding(SCT_URI, LACTATION), clinical=None, onset=f"{ago(731)}"),
            "unknown",
            id="no-status-lactation-day-731-not-counted-manual-unknown",
        ),
    ],
)
def test_i7_lactation_stops_counting(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([FEMALE, resource], "I7.lactation")
    assert result.verdict == expected, result.reason


ONE_DAY = timedelta(days=1)


def _coded_only_in(
    valueset: str,
    clinical_status: str = "active",
    onset: date | None = None,
    abatement: date | None = None,
) -> Diagnosis:
    """A diagnosis whose code only the named (subset) value set lists."""
    return Diagnosis(
        reference="Condition/subset-only",
        codes=(Code(SCT_URI, UNLISTED_SNOMED, "synthetic"),),
        concepts=frozenset({valueset}),
        clinical_status=clinical_status,
        verification_status="confirmed",
        onset=onset or ago(5),
        abatement=abatement,
        recorded=None,
    )


@pytest.mark.parametrize(
    ("criterion", "dx", "expected"),
    [
        pytest.param(
            "E4", _coded_only_in("infection_superficial"), "unknown", id="e4-superficial-only"
        ),
        pytest.param("E5", _coded_only_in("cns_transient"), "fail", id="e5-transient-active"),
        pytest.param(
            "E5",
            _coded_only_in(
                "cns_transient",
                clinical_status="resolved",
                onset=date(2010, 1, 1),
                abatement=date(2010, 2, 1),
            ),
            "pass",
            id="e5-transient-resolved-long-ago",
        ),
        # an event that resolves, recorded active with no end: present now if it began within
        # the 2 years, else it may have been over for > 2 years (a problem list never closed)
        pytest.param(
            "E5",
            _coded_only_in("cns_transient", onset=date(2003, 4, 13)),
            "unknown",
            id="e5-transient-active-since-2003-unknown",
        ),
        pytest.param(
            "E5",
            _coded_only_in("cns_transient", onset=date(AS_OF.year - 2, AS_OF.month, AS_OF.day)),
            "fail",
            id="e5-transient-active-began-2-years-ago-fail",
        ),
        pytest.param(
            "E5",
            _coded_only_in(
                "cns_transient", onset=date(AS_OF.year - 2, AS_OF.month, AS_OF.day) - ONE_DAY
            ),
            "unknown",
            id="e5-transient-active-began-2-years-and-a-day-ago-unknown",
        ),
        pytest.param(
            "E5",
            _coded_only_in("cns_transient", clinical_status="recurrence", onset=date(2003, 1, 1)),
            "unknown",
            id="e5-transient-recurrence-since-2003-unknown",
        ),
    ],
)
def test_records_only_in_a_subset_value_set_are_judged(
    criterion: str, dx: Diagnosis, expected: str
) -> None:
    assert run_ehr([], criterion, extra=[dx]).verdict == expected


def test_unreadable_record_whose_text_suggests_the_value_set_withholds_the_pass() -> None:
    broken = ehr_condition(coding(LOCAL, "XY-77"), text="血栓性血小板减少性紫癜")
    broken["onsetDateTime"] = "last spring"  # unreadable, but its code and text still are
    result = run_ehr([broken], "E2")
    assert result.verdict == "unknown"
    assert "could not be read" in result.reason


def test_unreadable_unrelated_unmapped_record_withholds_nothing() -> None:
    broken = ehr_condition(coding(LOCAL, "XY-78"), text="缺铁性贫血")
    broken["onsetDateTime"] = "last spring"
    assert run_ehr([broken], "E2").verdict == "pass"


# ------------------------------------------------------------------ statuses as EHRs send them
# Many EHRs leave `system` out of a status coding, or send only text; a local status code is
# not the standard one. A status that cannot be read keeps the record but never decides.
NO_SYSTEM_REFUTED = {"coding": [{"code": "refuted"}]}
LOCAL_STATUS = "http://hospital.example.cn/fhir/CodeSystem/dx-status"
LOCAL_REFUTED = {"coding": [{"system": LOCAL_STATUS, "code": "PC"}], "text": "排除诊断"}
LOCAL_CLINICAL = {"coding": [{"system": LOCAL_STATUS, "code": "03"}], "text": "好转"}
ICD10_URI = "http://hl7.org/fhir/sid/icd-10"


@pytest.mark.parametrize(
    ("resource", "criterion", "expected"),
    [
        pytest.param(
            ehr_condition(coding(ICD10_URI, "C50.9"), verification=NO_SYSTEM_REFUTED),
            "E8",
            "pass",
            id="e8-refuted-without-system-pass",
        ),
        pytest.param(
            ehr_condition(coding(ICD10_URI, "C50.9"), verification={"text": "Refuted"}),
            "E8",
            "pass",
            id="e8-refuted-as-text-pass",
        ),
        pytest.param(
            ehr_condition(coding(ICD10_URI, "C50.9"), verification=LOCAL_REFUTED),
            "E8",
            "unknown",
            id="e8-local-verification-unknown",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10_URI, "J18.9"),
                clinical={"coding": [{"code": "resolved"}]},
                onset=f"{ago(200)}T09:00:00+08:00",
            ),
            "E4",
            "pass",
            id="e4-resolved-without-system-pass",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10_URI, "J18.9"),
                clinical=LOCAL_CLINICAL,
                onset=f"{ago(10)}T09:00:00+08:00",
            ),
            "E4",
            "unknown",
            id="e4-local-clinical-status-unknown",
        ),
        pytest.param(
            ehr_condition(coding(ICD10_URI, "J18.9"), onset=f"{ago(10)}T09:00:00+08:00"),
            "E4",
            "fail",
            id="e4-standard-active-still-fails",
        ),
        pytest.param(
            ehr_condition(coding(ICD10_URI, "G04.2"), clinical=LOCAL_CLINICAL, onset="2019-03-01"),
            "E5",
            "unknown",
            id="e5-transient-local-clinical-status-unknown",
        ),
        pytest.param(
            ehr_condition(coding(ICD10_URI, "B18.1"), clinical=LOCAL_CLINICAL, onset="2019-03-01"),
            "E10.hbv",
            "unknown",
            id="e10-chronic-hbv-local-clinical-status-unknown",
        ),
        pytest.param(
            ehr_condition(
                coding(ICD10_URI, "B18.1"), clinical={"text": "Active"}, onset="2019-03-01"
            ),
            "E10.hbv",
            "fail",
            id="e10-chronic-hbv-active-as-text-fail",
        ),
    ],
)
def test_statuses_as_ehrs_send_them(
    resource: dict[str, Any], criterion: str, expected: str
) -> None:
    result = run_ehr([resource], criterion)
    assert result.verdict == expected, result.reason


def test_unread_verification_reason_shows_what_was_sent() -> None:
    resource = ehr_condition(coding(ICD10_URI, "C50.9"), verification=LOCAL_REFUTED)
    result = run_ehr([resource], "E8")
    assert "recorded as unread: 'PC'; confirm" in result.reason


# ------------------------------------------------------------------ E13: urine pregnancy tests
# As an LIS sends them: 2106-3 / 2112-1 / 80384-1 answered with text, a string or a code, full
# timestamps with an offset; serum hCG quantitative (21198-7) beside them.
def urine_hcg(code: str = "2106-3", *, at: str, **answer: Any) -> dict[str, Any]:
    return lab(code, at=at, text="尿妊娠试验 (尿HCG)", **answer)


def answered(resource: dict[str, Any], concept: dict[str, Any]) -> dict[str, Any]:
    return resource | {"valueCodeableConcept": concept}


AT = "T08:40:00+08:00"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [lab_patient(), answered(urine_hcg(at=f"{ago(2)}{AT}"), {"text": "阳性"})],
            "fail",
            id="urine-2106-3-text-positive-fail",
        ),
        pytest.param(
            [lab_patient(), urine_hcg("2112-1", at=f"{ago(29)}{AT}", string="POS")],
            "fail",
            id="urine-beta-2112-1-string-positive-day-29-fail",
        ),
        pytest.param(
            [
                lab_patient(),
                answered(
                    urine_hcg("80384-1", at=f"{ago(5)}{AT}"),
                    {"coding": [coding(SCT_URI, "10828004", "Positive")]},
                ),
            ],
            "fail",
            id="urine-rapid-80384-1-snomed-positive-fail",
        ),
        pytest.param(
            [lab_patient(), urine_hcg(at=f"{ago(5)}{AT}", interpretation="POS")],
            "fail",
            id="urine-interpretation-only-positive-fail",
        ),
        pytest.param(
            [lab_patient(), urine_hcg(at=f"{ago(31)}{AT}", string="阳性(+)")],
            "pass",
            id="urine-positive-day-31-outside-window-pass",
        ),
        pytest.param(
            [lab_patient(), urine_hcg(at=f"{ago(2)}{AT}", string="阴性")],
            "pass",
            id="urine-negative-shown-pass",
        ),
        pytest.param(
            [lab_patient(), urine_hcg(at=f"{ago(2)}{AT}", string="弱阳性")],
            "fail",
            id="urine-weak-positive-fail",
        ),
        pytest.param(
            [lab_patient(gender="male"), urine_hcg(at=f"{ago(2)}{AT}", string="阳性")],
            "not_applicable",
            id="male-not-applicable",
        ),
        pytest.param(
            [
                lab_patient(),
                urine_hcg(at=f"{ago(10)}{AT}", string="阳性"),
                lab("21198-7", 1.2, "m[IU]/mL", at=f"{ago(3)}{AT}"),
            ],
            "unknown",
            id="urine-positive-then-serum-negative-unknown",
        ),
        pytest.param(
            [
                lab_patient(),
                lab("21198-7", 850, "m[IU]/mL", at=f"{ago(10)}{AT}"),
                urine_hcg(at=f"{ago(3)}{AT}", string="阴性"),
            ],
            "unknown",
            id="serum-positive-then-urine-negative-unknown",
        ),
        pytest.param(
            [
                lab_patient(),
                lab("21198-7", 1.2, "m[IU]/mL", at=f"{ago(10)}{AT}"),
                urine_hcg(at=f"{ago(3)}{AT}", string="阳性"),
            ],
            "fail",
            id="serum-negative-then-urine-positive-fail",
        ),
    ],
)
def test_e13_urine_pregnancy_test(resources: list[dict[str, Any]], expected: str) -> None:
    result = judge(resources, "E13")
    assert result.verdict == expected, result.reason


def test_urine_pregnancy_test_never_decides_i7_hcg() -> None:
    """I7.hcg asks for a serum test: a negative urine test leaves it open."""
    resources = [lab_patient(), urine_hcg(at=f"{ago(1)}{AT}", string="阴性")]
    assert judge(resources, "I7.hcg").verdict == "unknown"


# ------------------------------------------------------------------ abatement[x] without a date
def abated(code: str, onset: str, **abatement: Any) -> dict[str, Any]:
    """A problem-list entry closed the way some EHRs close it: no status, abatement[x]."""
    return ehr_condition(coding(ICD10_URI, code), clinical=None, onset=onset) | abatement


@pytest.mark.parametrize(
    ("resource", "criterion", "expected"),
    [
        pytest.param(
            abated("J18.9", f"{ago(12)}T10:00:00+08:00", abatementBoolean=True),
            "E4",
            "pass",
            id="e4-pneumonia-abatement-boolean-pass",
        ),
        pytest.param(
            abated("J18.9", f"{ago(12)}T10:00:00+08:00", abatementString="已治愈"),
            "E4",
            "pass",
            id="e4-pneumonia-abatement-string-pass",
        ),
        pytest.param(
            abated("J18.9", f"{ago(12)}T10:00:00+08:00", abatementBoolean=False),
            "E4",
            "fail",
            id="e4-pneumonia-abatement-boolean-false-fail",
        ),
        pytest.param(
            abated("Z34.90", f"{ago(150)}", abatementAge={"value": 36, "unit": "a"}),
            "E13",
            "pass",
            id="e13-pregnancy-abatement-age-pass",
        ),
        pytest.param(
            abated("G04.2", "2015-05-01", abatementBoolean=True),
            "E5",
            "unknown",
            id="e5-transient-abated-without-date-unknown",
        ),
        pytest.param(
            abated("B18.1", "2015-05-01", abatementBoolean=True),
            "E10.hbv",
            "unknown",
            id="e10-chronic-hbv-abated-is-not-read-as-positive-unknown",
        ),
    ],
)
def test_abatement_without_a_date(resource: dict[str, Any], criterion: str, expected: str) -> None:
    result = run_ehr([resource], criterion)
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E9: dialysis as EHRs send it
CPT_URI = "http://www.ama-assn.org/go/cpt"
PCS_URI = "http://www.cms.gov/Medicare/Coding/ICD10"


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            ehr_procedure(coding(CPT_URI, "90935", "Hemodialysis, single evaluation")),
            "unknown",
            id="cpt-haemodialysis-with-display-unknown",
        ),
        pytest.param(
            ehr_procedure(coding(PCS_URI, "5A1D70Z"), text="血液透析（HD）"),  # noqa: RUF001
            "unknown",
            id="icd10pcs-with-chinese-text-unknown",
        ),
        pytest.param(
            ehr_procedure(coding(LOCAL, "XT-02"), text="CRRT", performed=f"{ago(120)}"),
            "pass",
            id="unlisted-dialysis-before-the-window-pass",
        ),
        pytest.param(
            ehr_procedure(coding(SCT_URI, HEMODIALYSIS), performed=None),
            "unknown",
            id="listed-dialysis-on-an-unrecorded-date-unknown",
        ),
        pytest.param(
            ehr_procedure(coding(SCT_URI, HEMODIALYSIS), performed=f"{ago(30)}T21:00:00-05:00"),
            "fail",
            id="listed-dialysis-in-the-window-fail",
        ),
        pytest.param(
            ehr_procedure(coding(CPT_URI, "44950", "Appendectomy")),
            "pass",
            id="unrelated-procedure-pass",
        ),
    ],
)
def test_e9_dialysis_as_ehrs_send_it(resource: dict[str, Any], expected: str) -> None:
    result = run_ehr([resource], "E9")
    assert result.verdict == expected, result.reason


def test_e9_unlisted_dialysis_reason_names_what_was_sent() -> None:
    resource = ehr_procedure(coding(CPT_URI, "90935", "Hemodialysis, single evaluation"))
    result = run_ehr([resource], "E9")
    assert "possible" in result.reason
    assert "Hemodialysis, single evaluation" in result.reason


def test_e11_psychotic_disorder_itself_is_a_psychiatric_disorder() -> None:
    """69322001 is the SLEDAI-2K psychosis item's code; the VSAC expansions behind
    psychiatric_severe left the concept itself out, so E11 passed on it."""
    resource = ehr_condition(coding(SCT_URI, "69322001", "Psychotic disorder"), onset="2024-02-01")
    result = run_ehr([resource], "E11")
    assert result.verdict == "fail", result.reason


def test_e13_positive_hcg_sent_without_a_loinc_system_fails() -> None:
    """Some lab interfaces leave `system` out of Observation.code: a valid LOINC code is read."""
    resource = urine_hcg(at=f"{ago(4)}{AT}", string="阳性")
    resource["code"]["coding"] = [{"code": "2106-3", "display": "HCG [Presence] in Urine"}]
    assert judge([lab_patient(), resource], "E13").verdict == "fail"


# ------------------------------------------------------------------ E9: eGFR below 15
def egfr(
    value: float, unit: str = "mL/min/1.73m2", *, day: str = "12", code: str = "98979-8"
) -> dict[str, Any]:
    """An eGFR as an LIS sends it: the unit as free text, no UCUM code."""
    resource = lab(code, value, None, at=f"2026-11-{day}T07:40:00+08:00")
    return resource | {"valueQuantity": {"value": value, "unit": unit}}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([egfr(9)], "unknown", id="ckd-epi-2021-9-unknown"),
        pytest.param([egfr(14.9, "ml/min/1.73 m²", code="33914-3")], "unknown", id="mdrd-14.9"),
        pytest.param([egfr(15)], "pass", id="15-is-not-below-15-pass"),
        pytest.param([egfr(8, day="02"), egfr(38, day="16")], "pass", id="recovered-later-pass"),
        pytest.param([egfr(40, day="02"), egfr(12, day="16")], "unknown", id="falls-below-15"),
        pytest.param(
            [egfr(9), ehr_condition(coding(ICD10CM_URI, "N18.6"), onset="2025-02-01")],
            "fail",
            id="with-an-esrd-diagnosis-the-diagnosis-fails",
        ),
        pytest.param([egfr(9, "mL/min")], "unknown", id="bare-mL/min-read-per-1.73-m2-9"),
        # Synthea writes every MDRD eGFR in a bare mL/min: read, not "indeterminate"
        pytest.param([egfr(66.5, "mL/min", code="33914-3")], "pass", id="bare-mL/min-66-pass"),
        pytest.param([egfr(66.5, "mL/min/1.73", code="33914-3")], "pass", id="per-1.73-66-pass"),
    ],
)
def test_e9_egfr_below_15_is_a_doubt_never_a_fail(
    resources: list[dict[str, Any]], expected: str
) -> None:
    result = judge([lab_patient(), *resources], "E9")
    assert result.verdict == expected, result.reason


# ------------------------------------------------- partial end dates, history and status codes
@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param("2021-11", "unknown", id="month-holding-the-cutoff-unknown"),
        pytest.param("2021", "unknown", id="year-holding-the-cutoff-unknown"),
        pytest.param("2021-10", "pass", id="month-before-the-cutoff-pass"),
        pytest.param("2020", "pass", id="year-before-the-cutoff-pass"),
        pytest.param("2022", "fail", id="year-after-the-cutoff-fail"),
    ],
)
def test_e8_exception_with_a_partial_end_date(abatement: str, expected: str) -> None:
    """Disease-free > 5 years as of 2026-11-27: "2021-11" may mean the 30th (not > 5 years)."""
    dx = condition(BCC, onset="2015", abatement=abatement, clinical="resolved")
    result = run([dx], "E8")
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param("2026-11", "unknown", id="ended-in-the-month-of-as-of-unknown"),
        pytest.param("2026-10", "pass", id="ended-the-month-before-pass"),
        pytest.param("2026-11-20", "pass", id="ended-on-a-day-before-as-of-pass"),
    ],
)
def test_e13_pregnancy_ended_in_a_partial_month(abatement: str, expected: str) -> None:
    dx = condition(PREGNANCY, onset="2026-03-01", abatement=abatement, clinical="resolved")
    result = run([dx], "E13")
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize(
    ("criterion", "code", "system"),
    [
        pytest.param("E5", "Z86.73", ICD10CM, id="E5-history-of-tia-and-infarction"),
        pytest.param("E5", "429993008", SCT_URI, id="E5-history-of-cva-without-deficit"),
        pytest.param("E6", "Z94.1", ICD10, id="E6-heart-transplant-status-who"),
        pytest.param("E6", "Z95.812", ICD10CM, id="E6-implantable-artificial-heart"),
        pytest.param("E6", "Z86.74", ICD10CM, id="E6-history-of-sudden-cardiac-arrest"),
        pytest.param("E9", "Z91.158", ICD10CM, id="E9-noncompliance-with-dialysis"),
        pytest.param("E9", "105502003", SCT_URI, id="E9-dependence-on-dialysis"),
        pytest.param("E11", "Z86.59", ICD10CM, id="E11-history-of-mental-disorder"),
        pytest.param("E11", "Z86.5", ICD10, id="E11-history-of-mental-disorder-who"),
    ],
)
def test_history_and_status_codes_exclude(criterion: str, code: str, system: str) -> None:
    result = run([condition(code, system=system)], criterion)
    assert result.verdict == "fail", result.reason


@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param(None, "unknown", id="active-history-code-no-end-unknown"),
        pytest.param("2015-06-01", "pass", id="over-long-ago-pass"),
        pytest.param("2025-06-01", "fail", id="over-recently-fail"),
    ],
)
def test_e5_history_of_cns_infection(abatement: str | None, expected: str) -> None:
    """Z86.61 recorded `active` means the history is current, not the infection."""
    dx = condition("Z86.61", system=ICD10CM, abatement=abatement)
    result = run([dx], "E5")
    assert result.verdict == expected, result.reason


def test_e9_dialysis_condition_is_reviewed() -> None:
    """A problem-list entry coded as haemodialysis (a procedure code) or named so in text."""
    coded = condition("302497006", clinical="active")
    assert run([coded], "E9").verdict == "unknown"
    named = condition("local-hd", system="http://hospital.example/dx")
    named["code"]["text"] = "维持性血液透析"
    assert run([named], "E9").verdict == "unknown"


# ================================================================== procedures that suggest it
@pytest.mark.parametrize(
    ("code", "text", "performed", "expected"),
    [
        pytest.param("232717009", None, "2025-05-10", "unknown", id="cabg-unknown"),
        pytest.param("415070008", None, None, "unknown", id="undated-pci-unknown"),
        pytest.param(None, "冠脉支架植入术", "2024-01-03", "unknown", id="stent-by-text-unknown"),
        pytest.param("232717009", None, "2030-01-01", "pass", id="after-as-of-pass"),
        pytest.param("80146002", None, "2025-05-10", "pass", id="appendectomy-pass"),
    ],
)
def test_e6_a_revascularisation_is_reviewed_not_passed(
    code: str | None, text: str | None, performed: str | None, expected: str
) -> None:
    procedure = ehr_procedure_record(code, text, performed)
    result = run_ehr([procedure], "E6")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert "review whether it was for severe cardiac diseases" in result.reason


def ehr_procedure_record(
    code: str | None, text: str | None, performed: str | None
) -> dict[str, object]:
    concept: dict[str, object] = {}
    if code:
        concept["coding"] = [{"system": "http://snomed.info/sct", "code": code}]
    if text:
        concept["text"] = text
    procedure: dict[str, object] = {
        "resourceType": "Procedure",
        "id": "ehr-proc-e6",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": concept,
    }
    if performed:
        procedure["performedDateTime"] = performed
    return procedure
