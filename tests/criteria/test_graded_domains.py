"""I3: at least one BILAG-2004 grade A, or two grade B (latest grade per domain, 90 days)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.factories import LUPUS, grade, obs

DOMAINS = [
    "constitutional",
    "mucocutaneous",
    "neuropsychiatric",
    "musculoskeletal",
    "cardiorespiratory",
    "gastrointestinal",
    "ophthalmic",
    "renal",
    "haematological",
]


def all_graded(**grades: str) -> list[dict[str, Any]]:
    """All nine domains graded: E unless given."""
    return [grade(domain, grades.get(domain, "E")) for domain in DOMAINS]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([grade("renal", "A")], "pass", id="one-A-pass"),
        pytest.param([grade("renal", "B"), grade("mucocutaneous", "B")], "pass", id="two-B-pass"),
        pytest.param(all_graded(renal="A", haematological="B"), "pass", id="A-and-B-pass"),
        pytest.param(all_graded(renal="B"), "fail", id="one-B-all-nine-graded-fail"),
        pytest.param(
            all_graded(renal="C", musculoskeletal="C"), "fail", id="two-C-all-nine-graded-fail"
        ),
        pytest.param([grade("renal", "B")], "unknown", id="one-B-eight-domains-missing-unknown"),
        pytest.param(all_graded(renal="B")[:-1], "unknown", id="one-B-one-domain-missing-unknown"),
        pytest.param([], "unknown", id="no-assessment-unknown"),
    ],
)
def test_i3_bilag(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I3")
    assert result.verdict == expected, result.reason


def test_latest_grade_per_domain_decides() -> None:
    resources = [grade("renal", "A", days=40), *all_graded(renal="C")]
    assert run(resources, "I3").verdict == "fail"


def test_grades_outside_window_do_not_count() -> None:
    resources = [grade("renal", "A", days=91), grade("mucocutaneous", "B")]
    result = run(resources, "I3")
    assert result.verdict == "unknown"
    assert "not graded in the last 90 days" in result.reason


def test_grade_at_day_90_counts() -> None:
    assert run([grade("renal", "A", days=90)], "I3").verdict == "pass"


def test_unknown_names_the_missing_domains() -> None:
    result = run([grade("renal", "B")], "I3")
    assert "1 B across 1 of 9" in result.reason
    assert result.check is not None
    assert "nine domains" in result.check


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"valueString": "Grade A"}, id="string-grade-A"),
        pytest.param({"valueString": " a "}, id="string-lower-case"),
        pytest.param(
            {"valueCodeableConcept": {"coding": [{"system": LUPUS, "code": "A"}]}}, id="coded-A"
        ),
    ],
)
def test_grade_value_forms(value: dict[str, Any]) -> None:
    resource = obs("bilag-2004-renal", system=LUPUS)
    resource.update(value)
    assert run([resource], "I3").verdict == "pass"
