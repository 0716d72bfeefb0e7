"""I3: at least one BILAG-2004 grade A, or two grade B (latest grade per domain, 90 days)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run
from tests.criteria.realworld import judge, lab
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


# ------------------------------------------------------------------ grades of the same time
def _graded(domain: str, letter: str, at: str) -> dict[str, Any]:
    resource = lab(f"bilag-2004-{domain}", string=letter, at=at)
    resource["code"]["coding"][0]["system"] = LUPUS
    return resource


AT = "2026-11-20T10:00:00+08:00"


def test_disagreeing_grades_of_one_instant_leave_the_domain_ungraded() -> None:
    resources = [_graded("renal", "A", AT), _graded("renal", "C", AT)]
    result = judge(resources, "I3")
    assert result.verdict == "unknown", result.reason
    assert "disagree" in result.reason


def test_disagreeing_grades_never_fail_a_complete_assessment() -> None:
    resources = [_graded(d, "E", AT) for d in DOMAINS if d != "renal"]
    resources += [_graded("renal", "A", AT), _graded("renal", "C", AT)]
    assert judge(resources, "I3").verdict == "unknown"


def test_the_later_grade_of_one_day_decides() -> None:
    resources = [
        _graded("renal", "A", "2026-11-20T16:00:00+08:00"),
        _graded("renal", "C", "2026-11-20T09:00:00+08:00"),
    ]
    assert judge(resources, "I3").verdict == "pass"


def test_a_grade_a_elsewhere_passes_despite_a_conflict() -> None:
    resources = [
        _graded("renal", "A", AT),
        _graded("renal", "C", AT),
        _graded("haematological", "A", AT),
    ]
    assert judge(resources, "I3").verdict == "pass"
