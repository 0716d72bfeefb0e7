"""I6.crcl: creatinine clearance >= 60 mL/min, measured first, else Cockcroft-Gault.

The reference patient is 40 on AS_OF. For a man of 43.2 kg with creatinine 1.0 mg/dL,
(140 - 40) x 43.2 / (72 x 1.0) = 60 mL/min exactly; a woman's is x 0.85 = 51.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.factories import CRCL, CREAT, WEIGHT, obs, patient

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
            cg("male", (1.0, "mg/dL"), weight_days=181),
            "body weight",
            id="weight-181-days-old-unknown",
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


def test_weight_at_180_days_still_counts() -> None:
    assert run(cg("male", (1.0, "mg/dL"), weight_days=180), "I6.crcl").verdict == "pass"


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        pytest.param(obs(CRCL, 60, "mL/min"), "pass", id="measured-60-mL/min-pass"),
        pytest.param(obs(CRCL, 59.9, "mL/min"), "fail", id="measured-59.9-mL/min-fail"),
        pytest.param(obs(CRCL, 1.0, "mL/s"), "pass", id="measured-1.0-mL/s-is-60-mL/min-pass"),
        pytest.param(obs(CRCL, 0.99, "mL/s"), "fail", id="measured-0.99-mL/s-is-59.4-mL/min-fail"),
        pytest.param(
            obs(CRCL, 60, "mL/min", comparator="<"), "fail", id="measured-<60-mL/min-fail"
        ),
        pytest.param(
            obs(CRCL, 90, "mL/min", comparator=">"), "pass", id="measured->90-mL/min-pass"
        ),
        pytest.param(
            obs(CRCL, 90, "mL/min", comparator="<"), "unknown", id="measured-<90-mL/min-unknown"
        ),
    ],
)
def test_measured_clearance(measured: dict[str, Any], expected: str) -> None:
    result = run([measured], "I6.crcl")
    assert result.verdict == expected, result.reason


def test_measured_clearance_is_preferred_over_cockcroft_gault() -> None:
    failing_cg = cg("female", (2.0, "mg/dL"))
    result = run([*failing_cg, obs(CRCL, 75, "mL/min", days=20)], "I6.crcl")
    assert result.verdict == "pass"
    assert "measured" in result.reason


def test_measured_clearance_outside_window_falls_back_to_cockcroft_gault() -> None:
    resources = [*cg("male", (2.0, "mg/dL")), obs(CRCL, 100, "mL/min", days=91)]
    result = run(resources, "I6.crcl")
    assert result.verdict == "fail"
    assert "140 - 40" in result.reason
