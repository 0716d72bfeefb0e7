"""Single-result thresholds: I2 (SLEDAI), I6 blood counts, liver, coagulation and LVEF.

Ids read "<lab>-<value as sent>-<unit as sent>[-<what it is>]-<verdict>".
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from service.criteria.engine import evaluate_criterion
from service.criteria.measurement import evaluate_measurement
from service.criteria.model import MeasurementRule
from service.facts import Code, MedicationExposure
from tests.conftest import context, facts_of, load_nct, load_terms, run
from tests.criteria.realworld import FEMALE, MALE, Resource, judge, lab, patient, ref_range
from tests.factories import (
    ALT,
    ANC,
    AST,
    FILGRASTIM,
    GILBERT,
    HGB,
    ICD10CM,
    INR,
    LUPUS,
    LVEF,
    NEUT_PCT,
    PT,
    RXNORM,
    SLEDAI,
    TBIL,
    WBC,
    ago,
    condition,
    medication,
    obs,
    score,
)


def check(resources: list[dict[str, Any]], criterion: str, expected: str) -> None:
    result = run(resources, criterion)
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ I2 SLEDAI-2K > 6
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([score(SLEDAI, 7)], "pass", id="sledai-7-pass"),
        pytest.param([score(SLEDAI, 6)], "fail", id="sledai-6-is-not-more-than-6-fail"),
        pytest.param(
            [score(SLEDAI, 12, days=20), score(SLEDAI, 4, days=1)],
            "fail",
            id="latest-4-decides-fail",
        ),
        pytest.param([], "unknown", id="no-score-unknown"),
        pytest.param([score(SLEDAI, 10, days=91)], "unknown", id="score-91-days-old-unknown"),
        pytest.param([score(SLEDAI, 10, days=90)], "pass", id="score-90-days-old-pass"),
        pytest.param(
            [obs(SLEDAI, 10, "{score}", system=LUPUS, status="preliminary")],
            "unknown",
            id="preliminary-score-unknown",
        ),
    ],
)
def test_i2_sledai(resources: list[dict[str, Any]], expected: str) -> None:
    check(resources, "I2", expected)


def test_i2_sledai_as_value_integer() -> None:
    resource = score(SLEDAI, 7)
    resource["valueInteger"] = 7
    del resource["valueQuantity"]
    check([resource], "I2", "pass")


def test_later_score_supersedes_earlier_even_if_earlier_passed() -> None:
    resources = [score(SLEDAI, 12, days=30), score(SLEDAI, 6, days=2)]
    result = run(resources, "I2")
    assert result.verdict == "fail"
    assert result.evidence[0].value == 6
    assert result.evidence[1].value == 12
    assert "not used" in (result.evidence[1].note or "")


# ------------------------------------------------------------------ I6 WBC >= 3 x10^9/L
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(3.0, "10*9/L", "pass", id="wbc-3.0-10*9/L-pass"),
        pytest.param(2.99, "10*9/L", "fail", id="wbc-2.99-10*9/L-fail"),
        pytest.param(3000, "/uL", "pass", id="wbc-3000-/uL-is-3.0-pass"),
        pytest.param(2990, "/uL", "fail", id="wbc-2990-/uL-is-2.99-fail"),
        pytest.param(3.0, "10*3/uL", "pass", id="wbc-3.0-10*3/uL-pass"),
        pytest.param(2.99, "10*3/uL", "fail", id="wbc-2.99-10*3/uL-fail"),
        pytest.param(3000, "/mm3", "pass", id="wbc-3000-/mm3-pass"),
    ],
)
def test_i6_wbc(value: float, unit: str, expected: str) -> None:
    check([obs(WBC, value, unit)], "I6.wbc", expected)


def test_i6_wbc_without_result_is_unknown() -> None:
    result = run([], "I6.wbc")
    assert result.verdict == "unknown"
    assert result.check == "Order a complete blood count."


# ------------------------------------------------------------------ I6 ANC >= 1 x10^9/L
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([obs(ANC, 1.0, "10*9/L")], "pass", id="anc-1.0-10*9/L-pass"),
        pytest.param([obs(ANC, 0.99, "10*9/L")], "fail", id="anc-0.99-10*9/L-fail"),
        pytest.param([obs(ANC, 1000, "/uL")], "pass", id="anc-1000-/uL-pass"),
        pytest.param([], "unknown", id="no-anc-unknown"),
        pytest.param(
            [obs(WBC, 4.0, "10*9/L"), obs(NEUT_PCT, 25, "%")],
            "pass",
            id="derived-wbc-4.0-x-25%-is-1.0-pass",
        ),
        pytest.param(
            [obs(WBC, 4.0, "10*9/L"), obs(NEUT_PCT, 24.9, "%")],
            "fail",
            id="derived-wbc-4.0-x-24.9%-is-0.996-fail",
        ),
        pytest.param(
            [obs(WBC, 4.0, "10*9/L", days=1), obs(NEUT_PCT, 50, "%", days=2)],
            "unknown",
            id="derived-needs-same-day-unknown",
        ),
        pytest.param([obs(NEUT_PCT, 50, "%")], "unknown", id="percent-without-wbc-unknown"),
    ],
)
def test_i6_anc(resources: list[dict[str, Any]], expected: str) -> None:
    check(resources, "I6.anc", expected)


def test_i6_anc_absolute_count_preferred_over_derived() -> None:
    resources = [obs(ANC, 0.5, "10*9/L"), obs(WBC, 4.0, "10*9/L"), obs(NEUT_PCT, 50, "%")]
    check(resources, "I6.anc", "fail")


def test_i6_anc_derived_shows_inputs() -> None:
    wbc, pct = obs(WBC, 4.0, "10*9/L"), obs(NEUT_PCT, 25, "%")
    result = run([wbc, pct], "I6.anc")
    derived = result.evidence[0]
    assert derived.reference is None
    assert derived.converted_value == pytest.approx(1.0)
    assert set(derived.inputs) == {f"Observation/{wbc['id']}", f"Observation/{pct['id']}"}


@pytest.mark.parametrize(
    ("gcsf_days_before_test", "expected"),
    [
        pytest.param(0, "unknown", id="gcsf-same-day-unknown"),
        pytest.param(14, "unknown", id="gcsf-14-days-before-unknown"),
        pytest.param(15, "pass", id="gcsf-15-days-before-pass"),
    ],
)
def test_i6_anc_after_gcsf(gcsf_days_before_test: int, expected: str) -> None:
    test_day = 5
    gcsf = medication(
        FILGRASTIM,
        start=ago(test_day + gcsf_days_before_test),
        end=ago(test_day + gcsf_days_before_test),
    )
    result = run([obs(ANC, 2.0, "10*9/L", days=test_day), gcsf], "I6.anc")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert f"MedicationStatement/{gcsf['id']}" in result.reason


def test_i6_anc_gcsf_after_the_test_does_not_matter() -> None:
    gcsf = medication(FILGRASTIM, start=ago(2), end=ago(2))
    check([obs(ANC, 2.0, "10*9/L", days=5), gcsf], "I6.anc", "pass")


def test_i6_anc_low_count_after_gcsf_is_still_unknown() -> None:
    """A count that would fail does not decide either when drawn too soon after G-CSF."""
    gcsf = medication(FILGRASTIM, start=ago(10), end=ago(10))
    check([obs(ANC, 0.5, "10*9/L", days=5), gcsf], "I6.anc", "unknown")


def test_i6_anc_derived_after_gcsf_is_unknown() -> None:
    gcsf = medication(FILGRASTIM, start=ago(10), end=ago(10))
    resources = [obs(WBC, 4.0, "10*9/L", days=5), obs(NEUT_PCT, 50, "%", days=5), gcsf]
    check(resources, "I6.anc", "unknown")


# ------------------------------------------------------------------ I6 Hb >= 60 g/L
@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(60, "g/L", "pass", id="hgb-60-g/L-pass"),
        pytest.param(59.9, "g/L", "fail", id="hgb-59.9-g/L-fail"),
        pytest.param(6.0, "g/dL", "pass", id="hgb-6.0-g/dL-is-60-g/L-pass"),
        pytest.param(5.99, "g/dL", "fail", id="hgb-5.99-g/dL-is-59.9-g/L-fail"),
        pytest.param(130, "g/L", "pass", id="hgb-130-g/L-pass"),
    ],
)
def test_i6_hgb(value: float, unit: str, expected: str) -> None:
    check([obs(HGB, value, unit)], "I6.hgb", expected)


def test_i6_hgb_evidence_shows_recorded_and_converted_value() -> None:
    result = run([obs(HGB, 6.0, "g/dL")], "I6.hgb")
    shown = result.evidence[0]
    assert (shown.value, shown.unit) == (6.0, "g/dL")
    assert (shown.converted_value, shown.converted_unit) == (60.0, "g/L")


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        pytest.param(0, "pass", id="drawn-on-as-of-pass"),
        pytest.param(90, "pass", id="day-90-in-window-pass"),
        pytest.param(91, "unknown", id="day-91-out-of-window-unknown"),
        pytest.param(-1, "unknown", id="dated-after-as-of-unknown"),
    ],
)
def test_lookback_window(days: int, expected: str) -> None:
    check([obs(HGB, 120, "g/L", days=days)], "I6.hgb", expected)


def test_result_outside_window_is_shown_with_a_note() -> None:
    old = obs(HGB, 120, "g/L", days=91)
    result = run([old], "I6.hgb")
    assert result.verdict == "unknown"
    assert "90 days" in result.reason
    assert [e.reference for e in result.evidence] == [f"Observation/{old['id']}"]
    assert "not used" in (result.evidence[0].note or "")


@pytest.mark.parametrize(
    "status",
    ["preliminary", "registered", "cancelled", "entered-in-error", "unknown"],
)
def test_results_that_are_not_final_never_count(status: str) -> None:
    check([obs(HGB, 40, "g/L", status=status)], "I6.hgb", "unknown")


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_final_amended_corrected_results_count(status: str) -> None:
    check([obs(HGB, 40, "g/L", status=status)], "I6.hgb", "fail")


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param("mmol/L", id="substance-without-molar-mass"),
        pytest.param("%", id="percent"),
        pytest.param("g", id="mass-not-concentration"),
        pytest.param("gram per litre", id="not-ucum"),
        pytest.param(None, id="no-unit"),
    ],
)
def test_unit_that_cannot_be_converted_is_unknown(unit: str | None) -> None:
    result = run([obs(HGB, 40, unit)], "I6.hgb")
    assert result.verdict == "unknown"
    if unit is not None:
        assert "cannot be converted" in result.reason


def test_unconvertible_result_is_shown_but_does_not_decide() -> None:
    odd = obs(HGB, 5, "mmol/L", days=1)
    result = run([odd], "I6.hgb")
    assert result.verdict == "unknown"
    assert [e.reference for e in result.evidence] == [f"Observation/{odd['id']}"]


def test_newer_unconvertible_result_is_not_skipped_for_an_older_one() -> None:
    """3 mmol/L (about 48 g/L) yesterday would fail; 130 g/L two months ago must not pass."""
    newest = obs(HGB, 3, "mmol/L", days=1)
    result = run([newest, obs(HGB, 130, "g/L", days=60)], "I6.hgb")
    assert result.verdict == "unknown"
    assert f"Observation/{newest['id']}" in result.reason
    assert result.evidence[0].note == "unit cannot be converted; not compared"


def test_same_day_readable_result_decides_beside_an_unconvertible_one() -> None:
    resources = [obs(HGB, 3, "mmol/L", days=1), obs(HGB, 130, "g/L", days=1)]
    check(resources, "I6.hgb", "pass")


# ------------------------------------------------------------------ units as labs send them
@pytest.mark.parametrize(
    ("code", "value", "unit", "criterion", "expected"),
    [
        pytest.param(WBC, 3.0, "K/uL", "I6.wbc", "pass", id="wbc-3.0-K/uL-alias-pass"),
        pytest.param(WBC, 2.99, "K/uL", "I6.wbc", "fail", id="wbc-2.99-K/uL-alias-fail"),
        pytest.param(WBC, 3.0, "x10^9/L", "I6.wbc", "pass", id="wbc-3.0-x10^9/L-alias-pass"),
        pytest.param(WBC, 2.99, "x10^9/L", "I6.wbc", "fail", id="wbc-2.99-x10^9/L-alias-fail"),
        pytest.param(ANC, 1.0, "10^9/L", "I6.anc", "pass", id="anc-1.0-10^9/L-alias-pass"),
        pytest.param(TBIL, 25.6, "µmol/L", "I6.tbil", "pass", id="tbil-25.6-µmol/L-alias-pass"),
        pytest.param(TBIL, 39.1, "µmol/L", "I6.tbil", "fail", id="tbil-39.1-µmol/L-alias-fail"),
        pytest.param(HGB, 6.0, "g/dl", "I6.hgb", "pass", id="hgb-6.0-g/dl-lower-case-alias-pass"),
    ],
)
def test_unit_aliases(code: str, value: float, unit: str, criterion: str, expected: str) -> None:
    """Non-UCUM units as sent in Quantity.unit (no UCUM code), via terminology/units/aliases.csv."""
    check([obs(code, value, unit, ucum=False)], criterion, expected)


def test_cancelled_gcsf_order_does_not_invalidate_the_count() -> None:
    order = medication(
        FILGRASTIM, start=ago(10), end=ago(10), kind="MedicationRequest", status="cancelled"
    )
    check([obs(ANC, 2.0, "10*9/L", days=5), order], "I6.anc", "pass")


# ------------------------------------------------------------------ I6 ALT / AST <= 3 x ULN
@pytest.mark.parametrize(
    ("criterion", "code"), [("I6.alt", ALT), ("I6.ast", AST)], ids=["alt", "ast"]
)
@pytest.mark.parametrize(
    ("value", "unit", "ref_high", "expected"),
    [
        pytest.param(105, "U/L", 35, "pass", id="105-U/L-is-3x-own-uln-35-pass"),
        pytest.param(105.1, "U/L", 35, "fail", id="105.1-U/L-over-3x-own-uln-35-fail"),
        pytest.param(120, "U/L", 35, "fail", id="120-U/L-own-uln-35-fail"),
        pytest.param(150, "U/L", 50, "pass", id="150-U/L-own-uln-50-pass"),
        pytest.param(200, "U/L", None, "fail", id="200-U/L-over-3x-every-common-uln-fail"),
        pytest.param(1.5, "ukat/L", 0.5, "pass", id="1.5-ukat/L-is-3x-own-uln-0.5-ukat/L-pass"),
    ],
)
def test_i6_transaminases(
    criterion: str, code: str, value: float, unit: str, ref_high: float | None, expected: str
) -> None:
    check([obs(code, value, unit, ref_high=ref_high)], criterion, expected)


def test_uln_source_is_named() -> None:
    own = run([obs(ALT, 50, "U/L", ref_high=35)], "I6.alt")
    common = run([obs(ALT, 50, "U/L")], "I6.alt")
    assert "the lab's reference range" in own.reason
    assert "no reference range sent" not in own.reason
    assert "ULNs in common use: no reference range sent" in common.reason


@pytest.mark.parametrize("criterion", ["I6.alt", "I6.ast"])
def test_i6_transaminases_without_result_unknown(criterion: str) -> None:
    check([], criterion, "unknown")


# ------------------------------------------------------------------ I6 TBIL <= 1.5 / 3.0 x ULN
@pytest.mark.parametrize(
    ("value", "unit", "ref_high", "gilbert", "expected"),
    [
        pytest.param(30, "umol/L", 20, False, "pass", id="tbil-30-umol/L-is-1.5x-own-uln-20-pass"),
        pytest.param(
            30.1, "umol/L", 20, False, "fail", id="tbil-30.1-umol/L-over-1.5x-uln-20-fail"
        ),
        pytest.param(
            1.8, "mg/dL", 1.2, False, "pass", id="tbil-1.8-mg/dL-is-1.5x-own-uln-1.2-mg/dL-pass"
        ),
        pytest.param(
            1.81, "mg/dL", 1.2, False, "fail", id="tbil-1.81-mg/dL-over-1.5x-uln-1.2-mg/dL-fail"
        ),
        pytest.param(
            60, "umol/L", 20, True, "pass", id="gilbert-tbil-60-umol/L-is-3.0x-uln-20-pass"
        ),
        pytest.param(
            60.1, "umol/L", 20, True, "fail", id="gilbert-tbil-60.1-umol/L-over-3.0x-fail"
        ),
        pytest.param(45, "umol/L", 20, False, "fail", id="no-gilbert-tbil-45-umol/L-is-2.25x-fail"),
        pytest.param(45, "umol/L", 20, True, "pass", id="gilbert-tbil-45-umol/L-is-2.25x-pass"),
        pytest.param(
            51.3,
            "umol/L",
            None,
            True,
            "pass",
            id="gilbert-tbil-51.3-umol/L-is-3.0x-common-low-pass",
        ),
        pytest.param(
            51.4, "umol/L", None, True, "unknown", id="gilbert-tbil-51.4-umol/L-no-range-unknown"
        ),
        pytest.param(
            78.1, "umol/L", None, True, "fail", id="gilbert-tbil-78.1-umol/L-over-3.0x-26-fail"
        ),
    ],
)
def test_i6_tbil(
    value: float, unit: str, ref_high: float | None, gilbert: bool, expected: str
) -> None:
    resources = [obs(TBIL, value, unit, ref_high=ref_high)]
    if gilbert:
        resources.append(condition(GILBERT, ICD10CM, onset="2010-05-01"))
    check(resources, "I6.tbil", expected)


def test_i6_tbil_gilbert_is_shown_as_evidence() -> None:
    gilbert = condition(GILBERT, ICD10CM, onset="2010-05-01")
    result = run([obs(TBIL, 45, "umol/L", ref_high=20), gilbert], "I6.tbil")
    assert f"Condition/{gilbert['id']}" in [e.reference for e in result.evidence]
    assert "3 x ULN" in result.reason


def test_i6_tbil_without_result_unknown() -> None:
    check([condition(GILBERT, ICD10CM)], "I6.tbil", "unknown")


# ------------------------------------------------------------------ I6 INR / PT <= 1.5 x ULN
@pytest.mark.parametrize(
    ("value", "ref_high", "expected"),
    [
        pytest.param(1.65, 1.1, "pass", id="inr-1.65-is-1.5x-own-uln-1.1-pass"),
        pytest.param(1.66, 1.1, "fail", id="inr-1.66-over-1.5x-own-uln-1.1-fail"),
    ],
)
def test_i6_inr(value: float, ref_high: float | None, expected: str) -> None:
    """INR is unitless; labs send it with no unit or as {INR}."""
    check([obs(INR, value, None, ref_high=ref_high)], "I6.inr", expected)
    check([obs(INR, value, "{INR}", ref_high=ref_high)], "I6.inr", expected)


@pytest.mark.parametrize(
    ("value", "unit", "ref_high", "expected"),
    [
        pytest.param(19.5, "s", 13.0, "pass", id="pt-19.5-s-is-1.5x-own-uln-13-pass"),
        pytest.param(19.6, "s", 13.0, "fail", id="pt-19.6-s-over-1.5x-own-uln-13-fail"),
    ],
)
def test_i6_pt(value: float, unit: str, ref_high: float | None, expected: str) -> None:
    check([obs(PT, value, unit, ref_high=ref_high)], "I6.pt", expected)


@pytest.mark.parametrize("criterion", ["I6.inr", "I6.pt"])
def test_i6_coagulation_without_result_unknown(criterion: str) -> None:
    check([], criterion, "unknown")


# ------------------------------------------------------------------ I6 LVEF >= 55 %
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([obs(LVEF, 55, "%")], "pass", id="lvef-55-%-pass"),
        pytest.param([obs(LVEF, 54.9, "%")], "fail", id="lvef-54.9-%-fail"),
        pytest.param([], "unknown", id="no-echo-unknown"),
    ],
)
def test_i6_lvef(resources: list[dict[str, Any]], expected: str) -> None:
    check(resources, "I6.lvef", expected)


# ------------------------------------------------------------------ reported bounds
@pytest.mark.parametrize(
    ("comparator", "value", "expected"),
    [
        pytest.param(">", 10.0, "pass", id="wbc->10-pass"),
        pytest.param("<", 2.0, "fail", id="wbc-<2-fail"),
        pytest.param("<", 3.0, "fail", id="wbc-<3-is-below-3-fail"),
        pytest.param("<", 5.0, "unknown", id="wbc-<5-cannot-decide-unknown"),
        pytest.param(">=", 3.0, "pass", id="wbc->=3-pass"),
    ],
)
def test_result_reported_as_a_bound(comparator: str, value: float, expected: str) -> None:
    check([obs(WBC, value, "10*9/L", comparator=comparator)], "I6.wbc", expected)


# ------------------------------------------------------------------ x ULN as labs send it
ALT_CN = "丙氨酸氨基转移酶"


@pytest.mark.parametrize(
    ("value", "gender", "expected"),
    [
        pytest.param(120, "female", "pass", id="alt-120-female-range-40-pass"),
        pytest.param(120.1, "female", "fail", id="alt-120.1-female-range-40-fail"),
        pytest.param(150, "male", "pass", id="alt-150-male-range-50-pass"),
        pytest.param(150.1, "male", "fail", id="alt-150.1-male-range-50-fail"),
        pytest.param(130, "unknown", "unknown", id="alt-130-sex-unknown-40-or-50-unknown"),
        pytest.param(119, "unknown", "pass", id="alt-119-sex-unknown-under-both-pass"),
        pytest.param(151, "unknown", "fail", id="alt-151-sex-unknown-over-both-fail"),
    ],
)
def test_uln_from_the_range_for_the_patients_sex(value: float, gender: str, expected: str) -> None:
    ranges = [
        ref_range(7, 40, "U/L", sex=FEMALE, meaning="normal"),
        ref_range(9, 50, "U/L", sex=MALE, meaning="normal"),
    ]
    resources = [patient(gender=gender), lab(ALT, value, "U/L", ranges=ranges, text=ALT_CN)]
    result = judge(resources, "I6.alt")
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1.8, "pass", id="inr-1.8-is-1.5x-normal-1.2-pass"),
        pytest.param(1.81, "fail", id="inr-1.81-over-1.5x-normal-1.2-fail"),
        pytest.param(2.5, "fail", id="inr-2.5-in-therapeutic-range-still-fail"),
    ],
)
def test_inr_uses_the_normal_range_never_the_therapeutic_one(value: float, expected: str) -> None:
    ranges = [
        ref_range(2.0, 3.0, meaning="therapeutic", text="warfarin target"),
        ref_range(0.8, 1.2, meaning="normal"),
    ]
    result = judge([patient(), lab(INR, value, "{INR}", ranges=ranges)], "I6.inr")
    assert result.verdict == expected, result.reason
    assert "ULN 1.2 " in result.reason


def test_a_range_of_another_age_band_is_not_used() -> None:
    # Born 1990: 36 at the test. The 0-17 band's ULN (80) would pass 150.
    ranges = [
        ref_range(None, 80, "U/L", age=(0, 17)),
        ref_range(None, 45, "U/L", age=(18, 120)),
    ]
    result = judge([patient(), lab(ALT, 150, "U/L", ranges=ranges)], "I6.alt")
    assert result.verdict == "fail", result.reason
    assert "ULN 45 " in result.reason


def test_only_treatment_ranges_fall_back_to_the_common_ulns() -> None:
    ranges = [ref_range(2.0, 3.0, meaning="treatment")]
    inside = judge([patient(), lab(INR, 1.7, "{INR}", ranges=ranges)], "I6.inr")
    assert inside.verdict == "unknown"
    assert "no reference range sent" in inside.reason
    low = judge([patient(), lab(INR, 1.0, "{INR}", ranges=ranges)], "I6.inr")
    assert low.verdict == "pass"


@pytest.mark.parametrize(
    ("criterion", "code", "value", "unit", "ranges"),
    [
        pytest.param("I6.alt", ALT, 30, "U/L", [ref_range(None, 0)], id="alt-high-0"),
        pytest.param("I6.alt", ALT, 30, "U/L", [ref_range(0, 0)], id="alt-0-0"),
        pytest.param("I6.ast", AST, 30, "U/L", [ref_range(40, 7)], id="ast-limits-swapped"),
        pytest.param("I6.inr", INR, 1.0, "{INR}", [ref_range(0, 0)], id="inr-0-0"),
        pytest.param("I6.pt", PT, 12, "s", [ref_range(None, 0, "s")], id="pt-high-0-s"),
        # limits sent without their unit, in another one than the value's
        pytest.param("I6.alt", ALT, 30, "U/L", [ref_range(None, 0.67)], id="alt-ukat-high"),
        pytest.param("I6.tbil", TBIL, 15, "umol/L", [ref_range(0.2, 1.2)], id="tbil-mg/dL-range"),
    ],
)
def test_a_placeholder_or_implausible_range_gives_no_uln(
    criterion: str, code: str, value: float, unit: str, ranges: list[Resource]
) -> None:
    """LIS interfaces send "0-0", a high of 0 or swapped limits for a range they do not have,
    and limits without a unit in another unit than the value (ALT "0.67" in ukat/L beside
    U/L): none is a ULN (x ULN would fail every normal value); the ULNs in common use decide
    as without a range."""
    result = judge([patient(), lab(code, value, unit, ranges=ranges)], criterion)
    assert result.verdict == "pass", result.reason
    assert "ULNs in common use" in result.reason


def test_an_implausible_uln_is_named() -> None:
    result = judge([patient(), lab(ALT, 130, "U/L", ranges=[ref_range(None, 0.67)])], "I6.alt")
    assert result.verdict == "unknown"
    assert "high 0.67 U/L is not a plausible ULN" in result.reason


@pytest.mark.parametrize(
    ("criterion", "code", "value", "unit", "expected"),
    [
        # ALT: ULNs in common use 33-56 U/L, so 3 x ULN runs from 99 to 168.
        pytest.param("I6.alt", ALT, 99, "U/L", "pass", id="alt-99-is-3x-33-pass"),
        pytest.param("I6.alt", ALT, 99.1, "U/L", "unknown", id="alt-99.1-unknown"),
        pytest.param("I6.alt", ALT, 168, "U/L", "unknown", id="alt-168-is-3x-56-unknown"),
        pytest.param("I6.alt", ALT, 168.1, "U/L", "fail", id="alt-168.1-over-3x-56-fail"),
        pytest.param("I6.alt", ALT, 1.65, "ukat/L", "pass", id="alt-1.65-ukat/L-is-99-pass"),
        # AST: 32-48 U/L -> 96-144.
        pytest.param("I6.ast", AST, 96, "U/L", "pass", id="ast-96-is-3x-32-pass"),
        pytest.param("I6.ast", AST, 96.1, "U/L", "unknown", id="ast-96.1-unknown"),
        pytest.param("I6.ast", AST, 144.1, "U/L", "fail", id="ast-144.1-over-3x-48-fail"),
        # Total bilirubin: 17.1-26 umol/L -> 25.65-39.
        pytest.param("I6.tbil", TBIL, 25.6, "umol/L", "pass", id="tbil-25.6-pass"),
        pytest.param("I6.tbil", TBIL, 39, "umol/L", "unknown", id="tbil-39-is-1.5x-26-unknown"),
        pytest.param("I6.tbil", TBIL, 39.1, "umol/L", "fail", id="tbil-39.1-fail"),
        pytest.param("I6.tbil", TBIL, 2.3, "mg/dL", "fail", id="tbil-2.3-mg/dL-is-39.3-fail"),
        # INR: 1.1-1.3 -> 1.65-1.95.
        pytest.param("I6.inr", INR, 1.65, "{INR}", "pass", id="inr-1.65-is-1.5x-1.1-pass"),
        pytest.param("I6.inr", INR, 1.66, "{INR}", "unknown", id="inr-1.66-unknown"),
        pytest.param("I6.inr", INR, 1.96, "{INR}", "fail", id="inr-1.96-over-1.5x-1.3-fail"),
        # PT: 12.5-14.5 s -> 18.75-21.75.
        pytest.param("I6.pt", PT, 18.75, "s", "pass", id="pt-18.75-is-1.5x-12.5-pass"),
        pytest.param("I6.pt", PT, 18.8, "s", "unknown", id="pt-18.8-unknown"),
        pytest.param("I6.pt", PT, 21.76, "s", "fail", id="pt-21.76-over-1.5x-14.5-fail"),
    ],
)
def test_without_a_range_the_verdict_must_hold_for_every_common_uln(
    criterion: str, code: str, value: float, unit: str, expected: str
) -> None:
    result = judge([patient(), lab(code, value, unit)], criterion)
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert "no reference range sent" in result.reason


def test_uln_interval_is_in_the_value_set() -> None:
    info = load_terms().valuesets["alt"]
    assert info.uln_interval is not None
    assert (info.uln_interval.low, info.uln_interval.high) == (33, 56)
    assert "WS/T 404.1" in info.uln_interval.source


# ------------------------------------------------------------------ ANC: the most recent value
def test_anc_derived_newer_than_a_measured_count_decides() -> None:
    resources = [
        lab(ANC, 0.5, "10*9/L", at="2026-11-10T09:00:00+08:00"),
        lab(WBC, 4.0, "10*9/L", at="2026-11-20T09:00:00+08:00"),
        lab(NEUT_PCT, 50, "%", at="2026-11-20T09:00:00+08:00"),
    ]
    result = judge(resources, "I6.anc")
    assert result.verdict == "pass", result.reason
    assert result.evidence[0].reference is None  # the derived value
    assert result.evidence[0].converted_value == pytest.approx(2.0)


def test_anc_measured_newer_than_the_derived_one_decides() -> None:
    resources = [
        lab(ANC, 0.5, "10*9/L", at="2026-11-20T09:00:00+08:00"),
        lab(WBC, 4.0, "10*9/L", at="2026-11-10T09:00:00+08:00"),
        lab(NEUT_PCT, 50, "%", at="2026-11-10T09:00:00+08:00"),
    ]
    assert judge(resources, "I6.anc").verdict == "fail"


def test_anc_later_the_same_day_decides_by_timestamp() -> None:
    resources = [
        lab(ANC, 0.5, "10*9/L", at="2026-11-20T07:00:00+08:00"),
        lab(WBC, 4.0, "10*9/L", at="2026-11-20T15:30:00+08:00"),
        lab(NEUT_PCT, 50, "%", at="2026-11-20T15:30:00+08:00"),
    ]
    assert judge(resources, "I6.anc").verdict == "pass"


def test_anc_measured_count_wins_at_the_same_instant() -> None:
    at = "2026-11-20T09:00:00+08:00"
    resources = [
        lab(ANC, 0.9, "10*9/L", at=at),
        lab(WBC, 4.0, "10*9/L", at=at),
        lab(NEUT_PCT, 50, "%", at=at),
    ]
    assert judge(resources, "I6.anc").verdict == "fail"


def _gcsf_request(
    status: str, start: str, end: str | None = None, code: str = "1649944"
) -> Resource:
    """A hospital G-CSF order coded as a clinical drug (1 ML filgrastim 0.3 MG/ML Injection)."""
    timing: Resource = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}
    timing["repeat"]["boundsPeriod"] = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "MedicationRequest",
        "id": f"gcsf-{status}-{start}",
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code}],
            "text": "重组人粒细胞刺激因子注射液",
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": start,
        "dosageInstruction": [{"timing": timing}],
    }


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        pytest.param(
            _gcsf_request("active", "2026-09-01"),
            "unknown",
            id="active-no-end-runs-to-test-unknown",
        ),
        pytest.param(
            _gcsf_request("on-hold", "2026-09-01"), "unknown", id="on-hold-no-end-unknown"
        ),
        pytest.param(
            _gcsf_request("completed", "2026-10-20", "2026-11-06"),
            "unknown",
            id="course-ended-14-days-before-unknown",
        ),
        pytest.param(
            _gcsf_request("completed", "2026-10-20", "2026-11-05"),
            "pass",
            id="course-ended-15-days-before-pass",
        ),
        pytest.param(
            _gcsf_request("active", "2026-11-21"), "pass", id="started-after-the-test-pass"
        ),
    ],
)
def test_anc_after_a_colony_stimulating_factor(order: Resource, expected: str) -> None:
    count = lab(ANC, 2.0, "10*9/L", at="2026-11-20T09:00:00+08:00")
    result = judge([count, order], "I6.anc")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert f"MedicationRequest/{order['id']}" in result.reason


@pytest.mark.parametrize(
    ("days_before_test", "expected"),
    [
        pytest.param(14, "unknown", id="unmapped-gcsf-14-days-before-unknown"),
        pytest.param(15, "pass", id="unmapped-gcsf-15-days-before-pass"),
    ],
)
def test_anc_after_an_unmapped_gcsf_that_reads_like_one(
    days_before_test: int, expected: str
) -> None:
    test_day = date(2026, 11, 20)
    facts = facts_of([lab(ANC, 2.0, "10*9/L", at="2026-11-20T09:00:00+08:00")])
    given = test_day - timedelta(days=days_before_test)
    facts.add(
        MedicationExposure(
            reference="MedicationAdministration/local-gcsf",
            codes=(Code("http://hospital.example/drugs", "ZX-0931"),),
            concepts=frozenset(),
            status="completed",
            start=given,
            end=given,
            resource_type="MedicationAdministration",
            text="瑞白 (rhG-CSF) 150 µg sc",
            review=frozenset({"gcsf"}),
        )
    )
    result = evaluate_criterion(load_nct().criterion("I6.anc"), facts, context())
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert "not in the value set" in result.reason
        assert "MedicationAdministration/local-gcsf" in result.reason


# ------------------------------------------------------------------ several results, one day
def test_results_at_the_same_instant_that_disagree_are_unknown() -> None:
    at = "2026-11-20T09:00:00+08:00"
    first, second = lab(WBC, 2.9, "10*9/L", at=at), lab(WBC, 3.5, "10*9/L", at=at)
    result = judge([first, second], "I6.wbc")
    assert result.verdict == "unknown", result.reason
    assert "disagree" in result.reason
    shown = {e.reference for e in result.evidence}
    assert {f"Observation/{first['id']}", f"Observation/{second['id']}"} <= shown


def test_results_at_the_same_instant_that_agree_decide() -> None:
    at = "2026-11-20T09:00:00+08:00"
    resources = [lab(WBC, 3.2, "10*9/L", at=at), lab(WBC, 3.5, "10*9/L", at=at)]
    assert judge(resources, "I6.wbc").verdict == "pass"


@pytest.mark.parametrize("ids", [("a", "z"), ("z", "a")], ids=["ids-ascending", "ids-descending"])
def test_the_later_timestamp_decides_whatever_the_ids(ids: tuple[str, str]) -> None:
    morning = lab(WBC, 2.5, "10*9/L", at="2026-11-20T08:00:00+08:00", rid=ids[0])
    # 09:30 in Nanjing is 01:30 UTC: later than 08:00+08:00 (00:00 UTC).
    later = lab(WBC, 3.5, "10*9/L", at="2026-11-20T01:30:00+00:00", rid=ids[1])
    for order in ([morning, later], [later, morning]):
        result = judge(order, "I6.wbc")
        assert result.verdict == "pass", result.reason


def test_date_only_results_of_one_day_that_disagree_are_unknown() -> None:
    resources = [lab(WBC, 2.5, "10*9/L", at="2026-11-20"), lab(WBC, 3.5, "10*9/L", at="2026-11-20")]
    assert judge(resources, "I6.wbc").verdict == "unknown"


def test_uln_rule_without_a_range_or_a_common_interval_is_unknown() -> None:
    # Hemoglobin's value set states no uln_interval: nothing may stand in for the lab's range.
    rule = MeasurementRule(type="measurement", lab="hemoglobin", op="<=", uln_multiple=2)
    facts = facts_of([lab(HGB, 130, "g/L")])
    verdict = evaluate_measurement(rule, facts, context())
    assert verdict.verdict == "unknown"
    assert "no reference range sent" in verdict.reason


def test_a_trial_may_no_longer_give_a_fixed_default_uln() -> None:
    with pytest.raises(ValidationError):
        MeasurementRule.model_validate(
            {
                "type": "measurement",
                "lab": "alt",
                "op": "<=",
                "uln_multiple": 3,
                "default_uln": {"value": 40, "unit": "U/L"},
            }
        )


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(lab("6690-2", interpretation="L"), id="interpretation-only"),
        pytest.param(lab("6690-2", string="5,2"), id="decimal-comma"),
    ],
)
def test_result_without_a_readable_number_is_named_not_called_older(result: Resource) -> None:
    """A result in the window that sends no number is unknown, shown as what it is."""
    verdict = judge([patient(), result], "I6.wbc")
    assert verdict.verdict == "unknown"
    assert f"{'Observation/' + result['id']} on 2026-11-20 sends none we can read" in verdict.reason
    assert [e.note for e in verdict.evidence] == ["no numeric value; not compared"]


@pytest.mark.parametrize(
    "newer",
    [
        pytest.param({"string": "2,1"}, id="decimal-comma"),
        pytest.param({"interpretation": "LL"}, id="critical-low-flag-only"),
        pytest.param({"string": "标本溶血，无法测定"}, id="not-measured-text"),  # noqa: RUF001
    ],
)
def test_a_later_result_without_a_number_is_not_hidden_by_an_earlier_value(
    newer: dict[str, Any],
) -> None:
    """The latest WBC decides: an earlier 5.2 x10^9/L does not stand in for one on a later
    day that sends no number we can read."""
    earlier = lab("6690-2", 5.2, "10*9/L", at="2026-11-10T08:00:00+08:00")
    later = lab("6690-2", at="2026-11-18T08:00:00+08:00", **newer)
    result = judge([patient(), earlier, later], "I6.wbc")
    assert result.verdict == "unknown", result.reason
    assert f"(Observation/{later['id']} on 2026-11-18) sends no number" in result.reason


def test_a_same_day_result_without_a_number_does_not_hide_a_value() -> None:
    timed = lab("6690-2", 5.2, "10*9/L", at="2026-11-18T08:00:00+08:00")
    flag = lab("6690-2", interpretation="N", at="2026-11-18T08:00:00+08:00")
    assert judge([patient(), timed, flag], "I6.wbc").verdict == "pass"
