"""I6.crcl: creatinine clearance >= 60 mL/min by Cockcroft-Gault (a measured one is only shown).

The reference patient is 40 on AS_OF. For a man of 43.2 kg with creatinine 1.0 mg/dL,
(140 - 40) x 43.2 / (72 x 1.0) = 60 mL/min exactly; a woman's is x 0.85 = 51.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.criteria.realworld import judge, lab
from tests.criteria.realworld import patient as raw_patient
from tests.factories import CRCL, CREAT, WEIGHT, obs, patient

CRCL_CG = "35591-7"  # creatinine_clearance_cockcroft_gault: calculated by the lab

BORN_1986 = "1986-06-01"  # 40 on AS_OF


def cg(
    gender: str | None,
    creatinine: tuple[float, str],
    weight: tuple[float, str] = (43.2, "kg"),
    *,
    birth: str | None = BORN_1986,
    weight_days: int = 10,
    creatinine_days: int = 5,
) -> list[dict[str, Any]]:
    return [
        patient(birth, gender),
        obs(CREAT, creatinine[0], creatinine[1], days=creatinine_days),
        obs(WEIGHT, weight[0], weight[1], days=weight_days),
    ]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(cg("male", (1.0, "mg/dL")), "pass", id="male-cg-60-mL/min-pass"),
        pytest.param(cg("male", (1.01, "mg/dL")), "fail", id="male-cg-59.4-mL/min-fail"),
        pytest.param(cg("female", (1.0, "mg/dL")), "fail", id="female-cg-51-mL/min-fail"),
        pytest.param(cg("female", (0.85, "mg/dL")), "pass", id="female-cg-60-mL/min-pass"),
        pytest.param(
            cg("male", (88.4, "umol/L")), "pass", id="male-creat-88.4-umol/L-is-1.0-mg/dL-pass"
        ),
        pytest.param(
            cg("male", (176.8, "umol/L")), "fail", id="male-creat-176.8-umol/L-is-2.0-mg/dL-fail"
        ),
        pytest.param(
            cg("male", (1.2, "mg/dL"), (110, "[lb_av]")),
            "fail",
            id="male-weight-110-lb-is-49.9-kg-cg-57.7-fail",
        ),
        pytest.param(cg(None, (0.5, "mg/dL")), "pass", id="sex-unrecorded-both-formulas-pass"),
        pytest.param(cg(None, (2.0, "mg/dL")), "fail", id="sex-unrecorded-both-formulas-fail"),
        pytest.param(
            cg(None, (1.0, "mg/dL")), "unknown", id="sex-unrecorded-formulas-disagree-unknown"
        ),
        pytest.param(
            cg("unknown", (1.0, "mg/dL")), "unknown", id="sex-unknown-formulas-disagree-unknown"
        ),
    ],
)
def test_cockcroft_gault(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I6.crcl")
    assert result.verdict == expected, result.reason


def test_cockcroft_gault_evidence_names_its_inputs() -> None:
    resources = cg("male", (1.0, "mg/dL"))
    result = run(resources, "I6.crcl")
    derived = result.evidence[0]
    assert derived.reference is None
    assert derived.value == 60.0
    assert set(derived.inputs) == {
        f"Observation/{resources[1]['id']}",
        f"Observation/{resources[2]['id']}",
        "Patient/p1",
    }
    assert "Cockcroft-Gault" in (derived.note or "")


def test_cockcroft_gault_uses_the_older_age_of_a_partial_birth_date() -> None:
    # Born some day of 1986: 39 or 40 on AS_OF; 40 gives the lower clearance (exactly 60).
    result = run(cg("male", (1.0, "mg/dL"), birth="1986"), "I6.crcl")
    assert result.verdict == "pass"
    assert "(140 - 40)" in result.reason


@pytest.mark.parametrize(
    ("resources", "missing"),
    [
        pytest.param(
            cg("male", (1.0, "mg/dL"), weight_days=186),
            "body weight",
            id="weight-181-days-before-the-creatinine-unknown",
        ),
        pytest.param(
            cg("male", (1.0, "mg/dL"), creatinine_days=91),
            "serum creatinine",
            id="creatinine-91-days-old-unknown",
        ),
        pytest.param(
            cg("male", (1.0, "mg/dL"), birth=None), "date of birth", id="no-birth-date-unknown"
        ),
        pytest.param([patient(BORN_1986, "male")], "serum creatinine", id="nothing-unknown"),
    ],
)
def test_cockcroft_gault_missing_input_is_unknown(
    resources: list[dict[str, Any]], missing: str
) -> None:
    result = run(resources, "I6.crcl")
    assert result.verdict == "unknown"
    assert missing in result.reason


def test_weight_180_days_before_the_creatinine_still_counts() -> None:
    assert run(cg("male", (1.0, "mg/dL"), weight_days=185), "I6.crcl").verdict == "pass"


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        pytest.param(obs(CRCL_CG, 60, "mL/min"), "pass", id="lab-cg-60-mL/min-pass"),
        pytest.param(obs(CRCL_CG, 59.9, "mL/min"), "fail", id="lab-cg-59.9-mL/min-fail"),
        pytest.param(obs(CRCL_CG, 1.0, "mL/s"), "pass", id="lab-cg-1.0-mL/s-is-60-mL/min-pass"),
        pytest.param(obs(CRCL_CG, 0.99, "mL/s"), "fail", id="lab-cg-0.99-mL/s-is-59.4-fail"),
        pytest.param(obs(CRCL_CG, 60, "mL/min", comparator="<"), "fail", id="lab-cg-<60-fail"),
        pytest.param(obs(CRCL_CG, 90, "mL/min", comparator=">"), "pass", id="lab-cg->90-pass"),
        pytest.param(
            obs(CRCL_CG, 90, "mL/min", comparator="<"), "unknown", id="lab-cg-<90-unknown"
        ),
    ],
)
def test_lab_calculated_cockcroft_gault_alone(reported: dict[str, Any], expected: str) -> None:
    result = run([reported], "I6.crcl")
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize("value", [30, 120])
def test_measured_24_hour_clearance_is_shown_but_never_decides(value: float) -> None:
    measured = obs(CRCL, value, "mL/min")
    alone = run([measured], "I6.crcl")
    assert alone.verdict == "unknown"
    assert f"Observation/{measured['id']}" in [e.reference for e in alone.evidence]
    failing_cg = cg("female", (2.0, "mg/dL"))
    result = run([*failing_cg, obs(CRCL, value, "mL/min", days=1)], "I6.crcl")
    assert result.verdict == "fail", result.reason


@pytest.mark.parametrize(
    ("reported_days", "expected"),
    [
        pytest.param(5, "unknown", id="lab-cg-same-day-as-creatinine-disagrees-unknown"),
        pytest.param(3, "unknown", id="lab-cg-newer-than-creatinine-disagrees-unknown"),
        pytest.param(6, "fail", id="lab-cg-older-than-creatinine-not-used-fail"),
    ],
)
def test_lab_calculated_value_counts_only_if_not_older_than_the_creatinine(
    reported_days: int, expected: str
) -> None:
    failing_cg = cg("male", (2.0, "mg/dL"))  # creatinine 5 days before AS_OF: 30 mL/min
    result = run([*failing_cg, obs(CRCL_CG, 75, "mL/min", days=reported_days)], "I6.crcl")
    assert result.verdict == expected, result.reason


def test_lab_calculated_value_that_agrees_with_the_formula_decides_with_it() -> None:
    resources = [*cg("male", (1.0, "mg/dL")), obs(CRCL_CG, 61, "mL/min", days=5)]
    assert run(resources, "I6.crcl").verdict == "pass"


# ------------------------------------------------------------------ as labs send them
SERUM, WHOLE_BLOOD = "2160-0", "38483-4"  # creatinine mass/volume in serum/plasma; in blood
AT = "2026-11-20T07:40:00+08:00"


def test_serum_creatinine_is_preferred_over_whole_blood_at_the_same_instant() -> None:
    resources = [
        raw_patient(BORN_1986, "male"),
        lab(WHOLE_BLOOD, 2.0, "mg/dL", at=AT, text="全血肌酐"),
        lab(SERUM, 1.0, "mg/dL", at=AT, text="血清肌酐"),
        lab(WEIGHT, 43.2, "kg", at="2026-11-19T10:00:00+08:00"),
    ]
    result = judge(resources, "I6.crcl")
    assert result.verdict == "pass", result.reason
    assert f"Observation/{resources[2]['id']}" in result.evidence[0].inputs


def test_two_serum_creatinines_at_the_same_instant_that_disagree_are_unknown() -> None:
    first, second = lab(SERUM, 1.0, "mg/dL", at=AT), lab(SERUM, 2.0, "mg/dL", at=AT)
    resources = [raw_patient(BORN_1986, "male"), first, second, lab(WEIGHT, 43.2, "kg", at=AT)]
    result = judge(resources, "I6.crcl")
    assert result.verdict == "unknown", result.reason
    assert "disagree" in result.reason


def test_a_later_creatinine_the_same_day_decides() -> None:
    resources = [
        raw_patient(BORN_1986, "male"),
        lab(SERUM, 2.0, "mg/dL", at="2026-11-20T07:40:00+08:00"),
        lab(SERUM, 1.0, "mg/dL", at="2026-11-20T16:05:00+08:00"),
        lab(WEIGHT, 43.2, "kg", at=AT),
    ]
    assert judge(resources, "I6.crcl").verdict == "pass"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        # Creatinine on 2026-11-20. The nearest weight decides, not the latest.
        pytest.param(
            [("2026-11-18", 43.2), ("2026-11-26", 30.0)], "pass", id="2-days-before-beats-6-after"
        ),
        pytest.param(
            [("2026-11-10", 43.2), ("2026-11-22", 30.0)], "fail", id="2-days-after-beats-10-before"
        ),
    ],
)
def test_the_weight_nearest_the_creatinine_is_used(
    weights: list[tuple[str, float]], expected: str
) -> None:
    resources = [
        raw_patient(BORN_1986, "male"),
        lab(SERUM, 1.0, "mg/dL", at=AT),
        *(lab(WEIGHT, kg, "kg", at=f"{day}T09:00:00+08:00") for day, kg in weights),
    ]
    result = judge(resources, "I6.crcl")
    assert result.verdict == expected, result.reason


def test_cockcroft_gault_for_a_patient_deceased_without_a_date_names_the_age_at_death() -> None:
    resources = cg("male", (1.0, "mg/dL"))
    resources[0]["deceasedBoolean"] = True
    result = run(resources, "I6.crcl")
    assert result.verdict == "unknown"
    assert "date of birth" not in result.reason
    assert "without a date of death" in result.reason


def test_a_later_unreadable_creatinine_is_not_replaced_by_an_earlier_one() -> None:
    resources = cg("male", (1.0, "mg/dL"), creatinine_days=20)
    later = obs(CREAT, days=5, text="溶血")
    result = run([*resources, later], "I6.crcl")
    assert result.verdict == "unknown"
    assert f"Observation/{later['id']}" in result.reason
    assert "sends no number we can read" in result.reason
