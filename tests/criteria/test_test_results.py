"""Infection serology (E10.hbv, E10.hcv, E10.hiv, E10.syphilis) and serum hCG (I7.hcg).

A test exclusion needs results: with none it is `unknown`, never `pass`. Results are read as
positive/negative from quantities, SNOMED-coded values, strings (English and Chinese) and
interpretation codes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from service.criteria import test_results
from service.criteria.engine import evaluate_criterion
from service.criteria.model import TestResultsRule, TestSpec
from service.facts import Code, LabResult, PatientFacts, Quantity
from tests.conftest import AS_OF, context, facts_of, load_nct, run
from tests.criteria.realworld import judge, lab
from tests.factories import (
    DETECTED,
    HBCAB,
    HBSAG,
    HBV_DNA,
    HCG,
    HCV_AB,
    HCV_RNA,
    HIV,
    NEGATIVE,
    NOT_DETECTED,
    POSITIVE,
    RPR,
    TPHA,
    obs,
    patient,
)


def pos(code: str, days: int = 5) -> dict[str, Any]:
    return obs(code, coded=POSITIVE, days=days)


def neg(code: str, days: int = 5) -> dict[str, Any]:
    return obs(code, coded=NEGATIVE, days=days)


def verdict_of(resources: list[dict[str, Any]], criterion: str) -> str:
    result = run(resources, criterion)
    return result.verdict


# ------------------------------------------------------------------ E10 HBV
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([pos(HBSAG)], "fail", id="hbsag-positive-fail"),
        pytest.param([pos(HBSAG), neg(HBCAB)], "fail", id="hbsag-positive-hbcab-negative-fail"),
        pytest.param([neg(HBSAG), neg(HBCAB)], "pass", id="hbsag-negative-hbcab-negative-pass"),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, 350, "[IU]/mL")],
            "fail",
            id="hbcab-positive-dna-350-IU/mL-fail",
        ),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, coded=DETECTED)],
            "fail",
            id="hbcab-positive-dna-detected-fail",
        ),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, 20, "[IU]/mL", comparator="<")],
            "unknown",
            id="hbcab-positive-dna-<20-below-quantitation-is-not-undetected-unknown",
        ),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, text="Not detected")],
            "pass",
            id="hbcab-positive-dna-not-detected-text-pass",
        ),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, 0, "[IU]/mL")],
            "pass",
            id="hbcab-positive-dna-0-IU/mL-pass",
        ),
        pytest.param(
            [neg(HBSAG), pos(HBCAB), obs(HBV_DNA, coded=NOT_DETECTED)],
            "pass",
            id="hbcab-positive-dna-not-detected-pass",
        ),
        pytest.param([neg(HBSAG), pos(HBCAB)], "unknown", id="hbcab-positive-no-dna-unknown"),
        pytest.param([neg(HBSAG)], "unknown", id="hbsag-negative-no-hbcab-unknown"),
        pytest.param([neg(HBCAB)], "unknown", id="no-hbsag-unknown"),
        pytest.param([], "unknown", id="no-results-unknown"),
        pytest.param([pos(HBSAG, days=91)], "fail", id="hbsag-positive-91-days-old-persists-fail"),
        pytest.param(
            [pos(HBSAG, days=900)], "fail", id="hbsag-positive-900-days-old-persists-fail"
        ),
        pytest.param(
            [pos(HBSAG, days=400), neg(HBSAG, days=5), neg(HBCAB)],
            "unknown",
            id="hbsag-negative-after-an-old-positive-review-unknown",
        ),
        pytest.param([neg(HBSAG, days=91), neg(HBCAB)], "unknown", id="old-negative-expires"),
        pytest.param(
            [pos(HBSAG, days=30), neg(HBSAG, days=2), neg(HBCAB)],
            "unknown",
            id="hbsag-negative-after-a-positive-review-unknown",
        ),
    ],
)
def test_e10_hbv(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E10.hbv")
    assert result.verdict == expected, result.reason


def test_e10_hbv_without_results_names_the_tests() -> None:
    result = run([], "E10.hbv")
    assert "no readable result" in result.reason
    assert result.check is not None
    assert "HBV DNA" in result.check


# ------------------------------------------------------------------ E10 HCV
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [pos(HCV_AB), obs(HCV_RNA, 1.2e5, "[IU]/mL")],
            "fail",
            id="ab-positive-rna-detectable-fail",
        ),
        pytest.param([neg(HCV_AB)], "pass", id="ab-negative-pass"),
        pytest.param(
            [pos(HCV_AB), obs(HCV_RNA, 15, "[IU]/mL", comparator="<")],
            "unknown",
            id="ab-positive-rna-<15-below-quantitation-unknown",
        ),
        pytest.param(
            [pos(HCV_AB), obs(HCV_RNA, coded=NOT_DETECTED)],
            "pass",
            id="ab-positive-rna-not-detected-pass",
        ),
        pytest.param(
            [pos(HCV_AB), obs(HCV_RNA, text="未检测到")],
            "pass",
            id="ab-positive-rna-chinese-not-detected-pass",
        ),
        pytest.param(
            [pos(HCV_AB), obs(HCV_RNA, text="检测到")],
            "fail",
            id="ab-positive-rna-chinese-detected-fail",
        ),
        pytest.param([pos(HCV_AB)], "unknown", id="ab-positive-no-rna-unknown"),
        pytest.param([], "unknown", id="no-results-unknown"),
    ],
)
def test_e10_hcv(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E10.hcv")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E10 HIV, and result forms
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"coded": POSITIVE}, "fail", id="snomed-positive-fail"),
        pytest.param({"coded": NEGATIVE}, "pass", id="snomed-negative-pass"),
        pytest.param({"text": "Positive"}, "fail", id="string-Positive-fail"),
        pytest.param({"text": "negative"}, "pass", id="string-negative-pass"),
        pytest.param({"text": "Reactive"}, "fail", id="string-Reactive-fail"),
        pytest.param({"text": "Non-reactive"}, "pass", id="string-Non-reactive-pass"),
        pytest.param({"text": "Detected"}, "fail", id="string-Detected-fail"),
        pytest.param({"text": "阳性"}, "fail", id="string-chinese-positive-fail"),
        pytest.param({"text": "阴性"}, "pass", id="string-chinese-negative-pass"),
        pytest.param({"text": "弱阳性"}, "fail", id="string-chinese-weakly-positive-fail"),
        pytest.param({"text": "+"}, "fail", id="string-plus-fail"),
        pytest.param({"text": "-"}, "pass", id="string-minus-pass"),
        pytest.param({"text": "see report"}, "unknown", id="unreadable-string-unknown"),
        pytest.param(
            {"value": 0.2, "unit": "{s_co_ratio}", "interpretation": "NEG"},
            "pass",
            id="interpretation-NEG-pass",
        ),
        pytest.param(
            {"value": 12.5, "unit": "{s_co_ratio}", "interpretation": "POS"},
            "fail",
            id="interpretation-POS-fail",
        ),
        pytest.param(
            {"value": 12.5, "unit": "{s_co_ratio}"},
            "unknown",
            id="index-without-interpretation-unknown",
        ),
        pytest.param({}, "unknown", id="no-value-unknown"),
    ],
)
def test_e10_hiv_result_forms(value: dict[str, Any], expected: str) -> None:
    result = run([obs(HIV, **value)], "E10.hiv")
    assert result.verdict == expected, result.reason


def test_e10_hiv_no_result_unknown() -> None:
    assert verdict_of([], "E10.hiv") == "unknown"


@pytest.mark.parametrize("status", ["preliminary", "cancelled", "entered-in-error"])
def test_e10_hiv_positive_that_does_not_count(status: str) -> None:
    assert verdict_of([obs(HIV, coded=POSITIVE, status=status)], "E10.hiv") == "unknown"


def test_coded_value_text_is_read_when_code_unknown() -> None:
    resource = obs(HIV, coded=("http://hospital.example/results", "P"))
    resource["valueCodeableConcept"]["text"] = "阳性"
    assert verdict_of([resource], "E10.hiv") == "fail"


# ------------------------------------------------------------------ E10 syphilis
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([pos(TPHA), pos(RPR)], "fail", id="tpha-positive-rpr-positive-fail"),
        pytest.param(
            [neg(TPHA), pos(RPR)],
            "pass",
            id="tpha-negative-rpr-positive-biological-false-positive-pass",
        ),
        pytest.param([neg(TPHA), neg(RPR)], "pass", id="tpha-negative-rpr-negative-pass"),
        pytest.param([neg(TPHA)], "pass", id="tpha-negative-no-rpr-pass"),
        pytest.param([pos(TPHA), neg(RPR)], "unknown", id="tpha-positive-one-rpr-negative-unknown"),
        pytest.param(
            [pos(TPHA), neg(RPR, days=40), neg(RPR, days=12)],
            "pass",
            id="tpha-positive-two-rpr-negative-28-days-apart-pass",
        ),
        pytest.param(
            [pos(TPHA), neg(RPR, days=39), neg(RPR, days=12)],
            "unknown",
            id="tpha-positive-two-rpr-negative-27-days-apart-unknown",
        ),
        pytest.param(
            [pos(TPHA), neg(RPR, days=40), pos(RPR, days=12)],
            "fail",
            id="tpha-positive-latest-rpr-positive-fail",
        ),
        pytest.param([pos(RPR)], "unknown", id="rpr-positive-no-tpha-unknown"),
        pytest.param([pos(TPHA)], "unknown", id="tpha-positive-no-rpr-unknown"),
        pytest.param([], "unknown", id="no-results-unknown"),
    ],
)
def test_e10_syphilis(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E10.syphilis")
    assert result.verdict == expected, result.reason


def test_e10_syphilis_confirmed_negative_shows_both_rpr() -> None:
    first, second = neg(RPR, days=40), neg(RPR, days=12)
    result = run([pos(TPHA), first, second], "E10.syphilis")
    shown = {e.reference for e in result.evidence}
    assert {f"Observation/{first['id']}", f"Observation/{second['id']}"} <= shown


# ------------------------------------------------------------------ I7 serum hCG (manual)
FEMALE = patient(gender="female")


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [FEMALE, obs(HCG, 30, "m[IU]/mL", days=7)], "fail", id="hcg-30-mIU/mL-day-7-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 25, "m[IU]/mL", days=2)], "fail", id="hcg-25-mIU/mL-is-positive-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 0.025, "[IU]/mL", days=2)],
            "fail",
            id="hcg-0.025-IU/mL-is-25-mIU/mL-fail",
        ),
        pytest.param(
            [FEMALE, obs(HCG, 25, "[IU]/L", days=2)], "fail", id="hcg-25-IU/L-is-25-mIU/mL-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, coded=POSITIVE, days=2)], "fail", id="hcg-snomed-positive-fail"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 30, "m[IU]/mL", days=8)], "unknown", id="hcg-positive-day-8-unknown"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 2, "m[IU]/mL", days=7)],
            "unknown",
            id="hcg-negative-day-7-never-pass-unknown",
        ),
        pytest.param(
            [FEMALE, obs(HCG, 5, "m[IU]/mL", comparator="<", days=1)],
            "unknown",
            id="hcg-<5-negative-unknown",
        ),
        pytest.param(
            [FEMALE, obs(HCG, 10, "m[IU]/mL", days=1)], "unknown", id="hcg-10-indeterminate-unknown"
        ),
        pytest.param(
            [FEMALE, obs(HCG, 24.9, "m[IU]/mL", days=1)],
            "unknown",
            id="hcg-24.9-below-positive-unknown",
        ),
        pytest.param([FEMALE], "unknown", id="no-hcg-unknown"),
        pytest.param(
            [patient(gender="male"), obs(HCG, 30, "m[IU]/mL")],
            "not_applicable",
            id="male-not-applicable",
        ),
        pytest.param(
            [patient(gender=None), obs(HCG, 30, "m[IU]/mL")],
            "fail",
            id="sex-unrecorded-positive-fail",
        ),
    ],
)
def test_i7_hcg(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I7.hcg")
    assert result.verdict == expected, result.reason


def test_i7_hcg_negative_reason_shows_the_record() -> None:
    result = run([FEMALE, obs(HCG, 2, "m[IU]/mL", days=3)], "I7.hcg")
    assert result.reason.startswith("confirmed only at the screening visit")
    assert "negative" in result.reason


# ------------------------------------------------------------------ E10 diagnoses as evidence
def _condition(
    system: str,
    code: str,
    text: str,
    *,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    abatement: str | None = None,
) -> dict[str, Any]:
    """A Condition as an EHR problem list sends it (Chinese text, no category)."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"dx-{code.replace('.', '')}-{clinical}-{verification}-{abatement}",
        "code": {"coding": [{"system": system, "code": code}], "text": text},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2015-04-02T00:00:00+08:00",
    }
    if clinical:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    if verification:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        }
    if abatement:
        resource["abatementDateTime"] = abatement
    return resource


SCT, ICD10 = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"
CHRONIC_HBV = _condition(ICD10, "B18.1", "慢性乙型病毒性肝炎")
HIV_DX = _condition(SCT, "86406008", "HIV感染")
CHRONIC_HCV = _condition(SCT, "128302006", "慢性丙型肝炎")
SYPHILIS = _condition(SCT, "76272004", "梅毒")


@pytest.mark.parametrize(
    ("criterion", "resources", "expected"),
    [
        pytest.param("E10.hbv", [CHRONIC_HBV], "fail", id="chronic-hbv-dx-alone-fail"),
        pytest.param(
            "E10.hbv",
            [_condition(ICD10, "B18.1", "慢性乙肝", clinical="resolved")],
            "unknown",
            id="resolved-hbv-dx-unknown",
        ),
        pytest.param(
            "E10.hbv",
            [_condition(ICD10, "B18.1", "慢性乙肝", abatement="2027-01-01")],
            "fail",
            id="hbv-dx-abating-after-as-of-was-active-fail",
        ),
        pytest.param(
            "E10.hbv",
            [_condition(ICD10, "B18.1", "慢性乙肝", clinical=None, abatement="2020-01-01")],
            "unknown",
            id="hbv-dx-abated-before-as-of-unknown",
        ),
        pytest.param(
            "E10.hbv",
            [CHRONIC_HBV, neg(HBSAG), neg(HBCAB)],
            "unknown",
            id="negative-hbsag-beside-chronic-hbv-dx-review-unknown",
        ),
        pytest.param("E10.hiv", [HIV_DX], "fail", id="hiv-dx-alone-fail"),
        pytest.param(
            "E10.hiv",
            [_condition(SCT, "86406008", "HIV?", verification="provisional")],
            "unknown",
            id="provisional-hiv-dx-unknown",
        ),
        pytest.param(
            "E10.hiv",
            [_condition(SCT, "165816005", "HIV detected")],
            "fail",
            id="hiv-detected-finding-fail",
        ),
        pytest.param("E10.hiv", [pos(HIV, days=2000)], "fail", id="hiv-positive-5-years-ago-fail"),
        pytest.param(
            "E10.hiv",
            [pos(HIV, days=2000), neg(HIV, days=3)],
            "unknown",
            id="hiv-negative-after-old-positive-review-unknown",
        ),
        pytest.param("E10.hcv", [CHRONIC_HCV], "unknown", id="chronic-hcv-dx-alone-unknown"),
        pytest.param(
            "E10.hcv",
            [CHRONIC_HCV, obs(HCV_RNA, 5.2e4, "[IU]/mL")],
            "fail",
            id="chronic-hcv-dx-and-rna-detectable-fail",
        ),
        pytest.param(
            "E10.hcv",
            [CHRONIC_HCV, obs(HCV_RNA, coded=NOT_DETECTED)],
            "pass",
            id="chronic-hcv-dx-rna-not-detected-pass",
        ),
        pytest.param("E10.syphilis", [SYPHILIS], "unknown", id="syphilis-dx-alone-unknown"),
        pytest.param(
            "E10.syphilis", [SYPHILIS, pos(RPR)], "fail", id="syphilis-dx-and-rpr-positive-fail"
        ),
        pytest.param(
            "E10.syphilis",
            [pos(TPHA, days=3000), pos(RPR)],
            "fail",
            id="tpha-positive-8-years-ago-rpr-positive-fail",
        ),
        pytest.param(
            "E10.syphilis",
            [pos(TPHA, days=3000), neg(TPHA, days=4), pos(RPR)],
            "unknown",
            id="tpha-negative-after-old-positive-review-unknown",
        ),
    ],
)
def test_e10_diagnoses_and_persisting_positives(
    criterion: str, resources: list[dict[str, Any]], expected: str
) -> None:
    result = run(resources, criterion)
    assert result.verdict == expected, result.reason


def test_e10_diagnosis_is_cited() -> None:
    result = run([HIV_DX], "E10.hiv")
    assert f"Condition/{HIV_DX['id']}" in [e.reference for e in result.evidence]
    assert "HIV infection" in result.reason


# ------------------------------------------------------------------ qualitative and titers
def _facts_with(**fields: Any) -> PatientFacts:
    facts = PatientFacts("Patient/p1")
    facts.add(
        LabResult(
            reference="Observation/x1",
            codes=(Code("http://loinc.org", fields.pop("loinc")),),
            concepts=frozenset({fields.pop("concept")}),
            effective=AS_OF - timedelta(days=3),
            status="final",
            **fields,
        )
    )
    return facts


@pytest.mark.parametrize(
    ("fields", "criterion", "expected"),
    [
        pytest.param(
            {
                "loinc": HBSAG,
                "concept": "hbsag",
                "quantity": Quantity(250.0, "COI", None, None, None),
                "qualitative": "positive",
            },
            "E10.hbv",
            "fail",
            id="hbsag-index-250-COI-qualitative-positive-fail",
        ),
        pytest.param(
            {
                "loinc": HIV,
                "concept": "hiv_ab",
                "quantity": Quantity(0.12, "S/CO", None, None, None),
                "qualitative": "negative",
            },
            "E10.hiv",
            "pass",
            id="hiv-index-0.12-qualitative-negative-pass",
        ),
        pytest.param(
            {"loinc": HIV, "concept": "hiv_ab", "quantity": Quantity(0.12, "S/CO")},
            "E10.hiv",
            "unknown",
            id="hiv-index-without-interpretation-unknown",
        ),
    ],
)
def test_qualitative_reading_of_numeric_serology(
    fields: dict[str, Any], criterion: str, expected: str
) -> None:
    facts = _facts_with(**fields)
    result = evaluate_criterion(load_nct().criterion(criterion), facts, context())
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize(
    ("titer", "expected_state"),
    [
        pytest.param(16.0, "positive", id="rpr-1:16-reactive"),
        pytest.param(1.0, "positive", id="rpr-1:1-reactive"),
        pytest.param(None, "unknown", id="no-titer-no-text-unknown"),
    ],
)
def test_titers_are_reactive_at_any_dilution(titer: float | None, expected_state: str) -> None:
    facts = _facts_with(loinc=RPR, concept="rpr", text="1:16" if titer else None, titer=titer)
    spec = TestSpec(lab="rpr")
    state, _, _ = test_results.test_state(spec, facts, context(), 90)
    assert state == expected_state


def _mapper_reads_titers() -> bool:
    facts = facts_of([lab(RPR, string="1:16")])
    return bool(facts.labs) and facts.labs[0].titer is not None


@pytest.mark.skipif(
    not _mapper_reads_titers(), reason="the Observation mapper does not fill LabResult.titer yet"
)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"string": "1:16"}, "fail", id="rpr-string-1:16-fail"),
        pytest.param({"string": "1\uff1a8"}, "fail", id="rpr-full-width-colon-1:8-fail"),
    ],
)
def test_rpr_titers_as_labs_send_them(value: dict[str, Any], expected: str) -> None:
    resources = [lab(TPHA, string="阳性"), lab(RPR, **value)]
    assert judge(resources, "E10.syphilis").verdict == expected


@pytest.mark.skipif(
    not _mapper_reads_titers(), reason="the Observation mapper does not fill LabResult.titer yet"
)
def test_rpr_value_ratio_is_a_titer() -> None:
    rpr = lab(RPR)
    rpr["valueRatio"] = {"numerator": {"value": 1}, "denominator": {"value": 32}}
    assert judge([lab(TPHA, string="阳性"), rpr], "E10.syphilis").verdict == "fail"


def test_viral_load_below_quantitation_as_a_lab_sends_it() -> None:
    below = lab(HBV_DNA, 20, "[IU]/mL", comparator="<", text="乙肝病毒DNA定量")
    resources = [lab(HBSAG, string="阴性"), lab(HBCAB, string="阳性"), below]
    assert judge(resources, "E10.hbv").verdict == "unknown"
    flagged = lab(HBV_DNA, 20, "[IU]/mL", comparator="<", interpretation="ND")
    resources = [lab(HBSAG, string="阴性"), lab(HBCAB, string="阳性"), flagged]
    assert judge(resources, "E10.hbv").verdict == "pass"


def test_same_instant_serology_that_disagrees_is_unknown() -> None:
    at = "2026-11-20T10:30:00+08:00"
    resources = [lab(HIV, string="阴性", at=at), lab(HIV, string="阳性", at=at)]
    result = judge(resources, "E10.hiv")
    assert result.verdict == "unknown", result.reason
    assert "disagree" in result.reason


# A later result that reads neither way hides what the test shows now: the earlier reading
# does not decide in its place (as a later result in a unit we cannot convert does for labs).
def lis(code: str, day: str, **value: Any) -> dict[str, Any]:
    return lab(code, at=f"2026-11-{day}T09:05:00+08:00", **value)


@pytest.mark.parametrize(
    ("resources", "criterion", "expected"),
    [
        pytest.param(
            [
                lis("5196-1", "10", string="阴性"),
                lis("16933-4", "10", string="阴性"),
                lis("5196-1", "18", value=250.0, unit="{index}"),
            ],
            "E10.hbv",
            "unknown",
            id="hbsag-negative-then-index-without-flag-unknown",
        ),
        pytest.param(
            [lis("16128-1", "10", string="Negative"), lis("16128-1", "18", string="可疑")],
            "E10.hcv",
            "unknown",
            id="hcv-ab-negative-then-equivocal-unknown",
        ),
        pytest.param(
            [lis("56888-1", "10", string="Non-reactive"), lis("56888-1", "18", string="见报告")],
            "E10.hiv",
            "unknown",
            id="hiv-negative-then-see-report-unknown",
        ),
        pytest.param(
            [lis("56888-1", "18", string="见报告"), lis("56888-1", "10", string="Reactive")],
            "E10.hiv",
            "fail",
            id="hiv-positive-persists-past-a-later-unreadable-fail",
        ),
        pytest.param(
            [lis("56888-1", "10", string="见报告"), lis("56888-1", "18", string="Non-reactive")],
            "E10.hiv",
            "pass",
            id="hiv-unreadable-then-negative-pass",
        ),
    ],
)
def test_a_later_unreadable_result_is_not_hidden_by_an_earlier_reading(
    resources: list[dict[str, Any]], criterion: str, expected: str
) -> None:
    result = judge(resources, criterion)
    assert result.verdict == expected, result.reason


def test_positive_suggests_only_is_refused_where_it_would_be_ignored() -> None:
    """Only diagnosis_excludes reads it; a test_results rule would silently fail on it."""
    raw = {
        "type": "test_results",
        "tests": {"egfr": {"lab": "egfr", "positive_suggests_only": True}},
        "fail_when": [["egfr"]],
    }
    with pytest.raises(ValidationError, match="positive_suggests_only"):
        TestResultsRule.model_validate(raw)


def test_egfr_thresholds_read_low_as_positive() -> None:
    spec = TestSpec(
        lab="egfr",
        positive_below={"value": 15, "unit": "mL/min/{1.73_m2}"},  # type: ignore[arg-type]
        negative_at_or_above={"value": 15, "unit": "mL/min/{1.73_m2}"},  # type: ignore[arg-type]
    )
    readings = [
        test_results.read_result(
            spec, facts_of([lab("98979-8", v, "mL/min/{1.73_m2}")]).labs[0], context()
        )
        for v in (14.99, 15.0, 60.0)
    ]
    assert readings == ["positive", "negative", "negative"]
