"""The engine's own rules (service/criteria/engine.py) and a whole-trial evaluation."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import orjson
import pytest

from service.criteria import engine
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.schemas import PatientResultPublic
from service.terminology import Terminology
from tests.conftest import AS_OF, facts_of, run
from tests.factories import (
    ALT,
    ANC,
    AST,
    CREAT,
    CYCLOPHOSPHAMIDE,
    HBCAB,
    HBSAG,
    HCV_AB,
    HGB,
    HIV,
    INR,
    LVEF,
    MYCOPHENOLATE,
    NEGATIVE,
    PREDNISONE,
    PT,
    RPR,
    SLE,
    SLEDAI,
    TBIL,
    TPHA,
    WBC,
    WEIGHT,
    condition,
    grade,
    medication,
    obs,
    patient,
    score,
)

MANUAL_ONLY = ["I7.contraception", "I8", "E14"]
FEMALE_ONLY = ["I7.hcg", "I7.lactation", "E13"]


def eligible(gender: str = "female") -> list[dict[str, Any]]:
    """A synthetic patient who meets every automatic criterion on AS_OF."""
    return [
        patient("1990-03-15", gender),
        condition(SLE, onset="2018-05-01"),
        score(SLEDAI, 10),
        grade("renal", "A"),
        obs(WEIGHT, 60, "kg", days=20),
        # weighed when the steroid course began: mg/kg/day uses the weight nearest the start
        obs(WEIGHT, 59, "kg", days=(AS_OF - date(2024, 1, 7)).days),
        medication(PREDNISONE, start=date(2024, 1, 10), end=date(2024, 3, 10), dose_mg=60),
        medication(CYCLOPHOSPHAMIDE, start=date(2024, 2, 1), end=date(2024, 2, 1), dose_mg=500),
        medication(MYCOPHENOLATE, start=date(2024, 1, 10), end=date(2025, 1, 10), dose_mg=1000),
        obs(WBC, 5.2, "10*9/L"),
        obs(ANC, 3.1, "10*9/L"),
        obs(HGB, 118, "g/L"),
        obs(ALT, 30, "U/L", ref_high=40),
        obs(AST, 28, "U/L", ref_high=40),
        obs(TBIL, 12, "umol/L", ref_high=21),
        obs(CREAT, 0.7, "mg/dL"),
        obs(INR, 1.0, None, ref_high=1.2),
        obs(PT, 12.0, "s", ref_high=13.5),
        obs(LVEF, 62, "%", days=30),
        *(obs(code, coded=NEGATIVE) for code in (HBSAG, HBCAB, HCV_AB, HIV, RPR, TPHA)),
    ]


def test_eligible_patient_is_likely_eligible(trial: TrialDefinition, terms: Terminology) -> None:
    result = evaluate(trial, facts_of(eligible()), AS_OF, terms)
    automatic = {c.id: c.verdict for c in result.criteria if c.assessment == "automatic"}
    assert set(automatic.values()) == {"pass"}, automatic
    assert result.status == "likely_eligible"
    assert result.score == 1.0
    assert result.patient.age == 36
    # Only the screening visit is left: the manual criteria, none of which can pass.
    manual = {c.id for c in trial.criteria if c.assessment == "manual"}
    assert {step.split(":")[0] for step in result.next_steps} == manual


def test_eligible_male_patient_skips_female_criteria(
    trial: TrialDefinition, terms: Terminology
) -> None:
    result = evaluate(trial, facts_of(eligible("male")), AS_OF, terms)
    verdicts = result.verdicts()
    assert [verdicts[c] for c in FEMALE_ONLY] == ["not_applicable"] * 3
    assert result.status == "likely_eligible"


def test_one_fail_makes_the_patient_ineligible(trial: TrialDefinition, terms: Terminology) -> None:
    resources = [*eligible(), obs(HGB, 55, "g/L", days=0)]
    result = evaluate(trial, facts_of(resources), AS_OF, terms)
    assert result.verdicts()["I6.hgb"] == "fail"
    assert (result.status, result.score) == ("ineligible", 0.0)


def test_the_same_input_gives_the_same_result(trial: TrialDefinition, terms: Terminology) -> None:
    resources = eligible()
    first = evaluate(trial, facts_of(resources), AS_OF, terms)
    second = evaluate(trial, facts_of(list(reversed(resources))), AS_OF, terms)
    assert first == second


def test_problems_are_reported(trial: TrialDefinition, terms: Terminology) -> None:
    broken = condition(SLE)
    broken["onsetDateTime"] = "yesterday"
    result = evaluate(trial, facts_of([*eligible(), broken]), AS_OF, terms)
    assert len(result.problems) == 1
    assert f"Condition/{broken['id']}" in result.problems[0]
    # The unreadable record is an SLE diagnosis: it withholds only what SLE could change.
    assert result.verdicts()["E2"] == "pass"
    uncoded = condition(SLE)
    del uncoded["code"]
    result = evaluate(trial, facts_of([*eligible(), uncoded]), AS_OF, terms)
    # A diagnosis without a code could be anything: no diagnosis exclusion passes.
    assert result.verdicts()["E2"] == "unknown"
    assert result.verdicts()["E8"] == "unknown"


# ------------------------------------------------------------------ applies_to
@pytest.mark.parametrize("criterion", FEMALE_ONLY)
@pytest.mark.parametrize(
    ("gender", "applicable"),
    [
        pytest.param("male", False, id="male"),
        pytest.param("female", True, id="female"),
        pytest.param("other", True, id="other"),
        pytest.param("unknown", True, id="unknown"),
        pytest.param(None, True, id="unrecorded"),
    ],
)
def test_applies_to_female(criterion: str, gender: str | None, applicable: bool) -> None:
    result = run([patient(gender=gender)], criterion)
    assert (result.verdict != "not_applicable") == applicable
    if not applicable:
        assert result.reason == "applies to female patients only"
        assert result.check is None


# ------------------------------------------------------------------ manual criteria
@pytest.mark.parametrize("criterion", MANUAL_ONLY)
@pytest.mark.parametrize("gender", ["female", "male"])
def test_manual_only_criteria_are_always_unknown(criterion: str, gender: str) -> None:
    result = run(eligible(gender), criterion)
    assert result.verdict == "unknown"
    assert result.reason == "decided at the screening visit"
    assert result.check


@pytest.mark.parametrize("criterion", MANUAL_ONLY)
def test_manual_only_criteria_never_fail_or_pass(criterion: str) -> None:
    assert run([], criterion).verdict == "unknown"


def test_check_is_given_only_for_unknown() -> None:
    assert run([obs(HGB, 120, "g/L")], "I6.hgb").check is None
    assert run([obs(HGB, 40, "g/L")], "I6.hgb").check is None
    assert run([], "I6.hgb").check == "Order a complete blood count."


# ------------------------------------------------------------------ a rule that raises
def test_rule_that_raises_is_unknown_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setitem(engine.RULES, "measurement", broken)
    with caplog.at_level(logging.ERROR, logger="service.criteria.engine"):
        result = run([obs(HGB, 120, "g/L")], "I6.hgb")
    assert result.verdict == "unknown"
    assert "internal error" in result.reason
    assert "I6.hgb" in caplog.text
    assert "Patient/p1" in caplog.text
    assert "120" not in caplog.text  # no clinical values in the log


# ------------------------------------------------------------------ coverage of the trial file
# Every criterion of the trial must have pass/fail/unknown tests in tests/criteria/; adding a
# criterion to the trial file fails this test until it is added here (and tested).
TESTED = {
    "I1": "test_diagnoses.py",
    "I2": "test_measurement.py",
    "I3": "test_graded_domains.py",
    "I4": "test_therapy_history.py",
    "I5": "test_age.py",
    "I6.wbc": "test_measurement.py",
    "I6.anc": "test_measurement.py",
    "I6.hgb": "test_measurement.py",
    "I6.alt": "test_measurement.py",
    "I6.ast": "test_measurement.py",
    "I6.tbil": "test_measurement.py",
    "I6.crcl": "test_creatinine_clearance.py",
    "I6.inr": "test_measurement.py",
    "I6.pt": "test_measurement.py",
    "I6.lvef": "test_measurement.py",
    "I7.hcg": "test_test_results.py",
    "I7.lactation": "test_diagnoses.py",
    "I7.contraception": "test_engine.py",
    "I8": "test_engine.py",
    "E2": "test_diagnoses.py",
    "E3": "test_allergy.py",
    "E4": "test_diagnoses.py",
    "E5": "test_diagnoses.py",
    "E6": "test_diagnoses.py",
    "E7": "test_diagnoses.py",
    "E8": "test_diagnoses.py",
    "E9": "test_diagnoses.py",
    "E10.hbv": "test_test_results.py",
    "E10.hcv": "test_test_results.py",
    "E10.hiv": "test_test_results.py",
    "E10.syphilis": "test_test_results.py",
    "E11": "test_diagnoses.py",
    "E12": "test_study_participation.py",
    "E13": "test_diagnoses.py",
    "E14": "test_engine.py",
}


def test_every_criterion_of_the_trial_is_tested(trial: TrialDefinition) -> None:
    assert {c.id for c in trial.criteria} == set(TESTED)


# ------------------------------------------------------------------ death and identifiers
def died(**fields: Any) -> list[dict[str, Any]]:
    """The eligible patient, with `fields` added to the Patient resource."""
    resources = eligible()
    resources[0] = {**resources[0], **fields}
    return resources


@pytest.mark.parametrize(
    ("fields", "age"),
    [
        pytest.param({"deceasedDateTime": "2025-03-14T21:00:00+08:00"}, 34, id="before-as-of"),
        pytest.param({"deceasedDateTime": AS_OF.isoformat()}, 36, id="on-as-of"),
        pytest.param({"deceasedBoolean": True}, None, id="boolean-without-date"),
    ],
)
def test_a_deceased_patient_is_never_a_candidate(
    trial: TrialDefinition, terms: Terminology, fields: dict[str, Any], age: int | None
) -> None:
    result = evaluate(trial, facts_of(died(**fields)), AS_OF, terms)
    assert (result.status, result.score, result.next_steps) == ("ineligible", 0.0, [])
    assert result.status_reason is not None
    assert result.status_reason.startswith("deceased")
    assert "not a candidate" in result.status_reason
    # the criteria are still evaluated and shown, none of them fails: the reason is apart
    # (without a date of death the age, and so I5 and Cockcroft-Gault, are unknown)
    automatic = {c.verdict for c in result.criteria if c.assessment == "automatic"}
    assert automatic == ({"pass"} if age is not None else {"pass", "unknown"})
    assert result.patient.deceased is True
    assert result.patient.age == age  # at death, never past it; unknown without a date


def test_death_after_as_of_does_not_count(trial: TrialDefinition, terms: Terminology) -> None:
    later = AS_OF.replace(day=AS_OF.day + 1).isoformat()
    result = evaluate(trial, facts_of(died(deceasedDateTime=later)), AS_OF, terms)
    assert result.status == "likely_eligible"
    assert result.status_reason is None
    assert (result.patient.deceased, result.patient.deceased_date) == (False, None)
    assert result.patient.age == 36


def test_deceased_date_is_in_the_result(trial: TrialDefinition, terms: Terminology) -> None:
    result = evaluate(trial, facts_of(died(deceasedDateTime="2026-10-01")), AS_OF, terms)
    assert result.patient.deceased_date == date(2026, 10, 1)
    assert result.status_reason is not None
    assert "2026-10-01" in result.status_reason


def test_age_criterion_is_judged_at_death(trial: TrialDefinition, terms: Terminology) -> None:
    """Born 1955-01-10: 71 on AS_OF (over 65) but 65 when she died in 2020."""
    resources = died(birthDate="1955-01-10", deceasedDateTime="2020-06-01")
    result = evaluate(trial, facts_of(resources), AS_OF, terms)
    assert result.patient.age == 65
    assert result.status == "ineligible"


IDENTIFIERS = [
    {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]
        },
        "value": "PI-77",
    },
    {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
        },
        "system": "http://hospital.example.cn/fhir/sid/mrn",
        "value": "ZY20260451",
    },
]


@pytest.mark.parametrize(
    ("mrn_type", "expected"),
    [("MR", "ZY20260451"), ("PI", "PI-77"), ("NNCHN", None)],
)
def test_mrn_is_the_identifier_of_the_configured_type(
    trial: TrialDefinition, terms: Terminology, mrn_type: str, expected: str | None
) -> None:
    result = evaluate(
        trial, facts_of(died(identifier=IDENTIFIERS)), AS_OF, terms, mrn_type=mrn_type
    )
    assert result.patient.mrn == expected
    assert [i.value for i in result.patient.identifiers] == ["PI-77", "ZY20260451"]


def test_default_mrn_type_is_mr(trial: TrialDefinition, terms: Terminology) -> None:
    result = evaluate(trial, facts_of(died(identifier=IDENTIFIERS)), AS_OF, terms)
    assert result.patient.mrn == "ZY20260451"


def test_result_json_carries_identifiers_and_death(
    trial: TrialDefinition, terms: Terminology
) -> None:
    resources = died(identifier=IDENTIFIERS, deceasedDateTime="2026-10-01")
    result = evaluate(trial, facts_of(resources), AS_OF, terms)
    body = orjson.loads(orjson.dumps(result))
    PatientResultPublic.model_validate(body)  # the published contract
    assert body["status_reason"] == result.status_reason
    assert body["patient"]["mrn"] == "ZY20260451"
    assert body["patient"]["deceased_date"] == "2026-10-01"
    assert body["patient"]["identifiers"][1] == {
        "value": "ZY20260451",
        "system": "http://hospital.example.cn/fhir/sid/mrn",
        "type": "MR",
        "label": None,
    }
