"""I5: aged 18-65 in whole years on AS_OF (2026-11-27); 65 years and 364 days is still 65."""

from __future__ import annotations

from datetime import date

import pytest

from tests.conftest import run
from tests.factories import patient


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        pytest.param("2008-11-28", "fail", id="17y364d-fail"),
        pytest.param("2008-11-27", "pass", id="18th-birthday-pass"),
        pytest.param("1990-03-15", "pass", id="36-pass"),
        pytest.param("1960-11-28", "pass", id="65y364d-pass"),
        pytest.param("1960-11-27", "fail", id="66th-birthday-fail"),
        pytest.param("1940-01-01", "fail", id="86-fail"),
        pytest.param("1990", "pass", id="year-only-35-or-36-pass"),
        pytest.param("2008", "unknown", id="year-only-17-or-18-straddles-unknown"),
        pytest.param("2008-11", "unknown", id="month-only-17-or-18-straddles-unknown"),
        pytest.param("2008-10", "pass", id="month-only-all-18-pass"),
        pytest.param("2008-12", "fail", id="month-only-all-17-fail"),
        pytest.param("1960-11", "unknown", id="month-only-65-or-66-straddles-unknown"),
        pytest.param("1960-12", "pass", id="month-only-all-65-pass"),
        pytest.param("1959", "fail", id="year-only-66-or-67-fail"),
    ],
)
def test_i5_age(birth: str, expected: str) -> None:
    result = run([patient(birth)], "I5")
    assert result.verdict == expected, result.reason


def test_i5_leap_day_birthday() -> None:
    # Born 29 Feb 2008: 18 on 1 March 2026 (no 29 Feb that year), not on 28 Feb.
    assert run([patient("2008-02-29")], "I5", as_of=date(2026, 2, 28)).verdict == "fail"
    assert run([patient("2008-02-29")], "I5", as_of=date(2026, 3, 1)).verdict == "pass"


@pytest.mark.parametrize(
    "resources",
    [pytest.param([patient(None)], id="no-birth-date"), pytest.param([], id="no-patient-record")],
)
def test_i5_without_birth_date_unknown(resources: list[dict[str, object]]) -> None:
    result = run(resources, "I5")
    assert result.verdict == "unknown"
    assert result.reason == "date of birth not recorded"


def test_i5_partial_birth_date_says_why() -> None:
    result = run([patient("2008")], "I5")
    assert "partial date of birth" in result.reason
    assert "17-18" in result.reason


def deceased(birth: str, **death: object) -> dict[str, object]:
    return patient(birth) | death


def test_i5_deceased_without_a_date_says_so_not_that_birth_is_missing() -> None:
    """deceasedBoolean: the age at death is not known; the birth date is on record."""
    result = run([deceased("1990-03-15", deceasedBoolean=True)], "I5")
    assert result.verdict == "unknown"
    assert result.reason == "recorded deceased without a date of death: age at death not known"
    assert [e.value for e in result.evidence] == ["1990-03-15"]


def test_i5_deceased_on_a_date_is_judged_at_death() -> None:
    # Died at 17 (a day before the 18th birthday): never 18.
    resource = deceased("2000-06-02", deceasedDateTime="2018-06-01T23:10:00+08:00")
    result = run([resource], "I5")
    assert result.verdict == "fail", result.reason
    assert "age 17" in result.reason


def test_i5_birth_after_as_of_says_so() -> None:
    result = run([patient("2027-01-05")], "I5")
    assert result.verdict == "unknown"
    assert result.reason == "date of birth 2027-01-05 is after 2026-11-27"
