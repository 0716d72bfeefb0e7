"""Medication records that cannot be placed in time, and anti-infective administrations.

A record with no start date (no effective[x], authoredOn, bounds, whenHandedOver) may have
been taken on any day: missing data is never a verdict (criteria/exposure.py: `undated`).
E4 reads one still taken (active, on hold) as possibly taken on as_of; I6.anc reads one of
any status as possibly within 14 days before the count; SLEDAI-2K reads an undated myelotoxic
drug as a possible cause of a low count, as it reads a record whose drug is unknown. And an
anti-infective administration is a dose of a course that runs past its day.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import AS_OF, run
from tests.criteria.test_scoring import c3, i2, item, score_of, urine, wbc
from tests.factories import AMOXICILLIN, ANC, AZATHIOPRINE, FILGRASTIM, ago, medication, obs

Resource = dict[str, Any]


def undated(code: str, kind: str, status: str) -> Resource:
    return medication(code, kind=kind, status=status, per_day=None)


# ------------------------------------------------------------------ E4
@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        pytest.param("MedicationRequest", "active", "unknown", id="active-order"),
        pytest.param("MedicationStatement", "active", "unknown", id="active-statement"),
        pytest.param("MedicationRequest", "on-hold", "unknown", id="on-hold-order"),
        pytest.param("MedicationStatement", "completed", "pass", id="completed-not-now"),
        pytest.param("MedicationRequest", "stopped", "pass", id="stopped-not-now"),
    ],
)
def test_e4_an_undated_anti_infective_still_taken_is_suspect(
    kind: str, status: str, expected: str
) -> None:
    result = run([undated(AMOXICILLIN, kind, status)], "E4")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert f"{status}, no date recorded: may be taken on {AS_OF}" in result.reason


def test_e4_an_active_statement_asserted_long_ago_is_an_old_course() -> None:
    old = undated(AMOXICILLIN, "MedicationStatement", "active") | {"dateAsserted": "2024-05-02"}
    assert run([old], "E4").verdict == "pass"  # taken as of 2024-05-02: a 14-day course
    recent = old | {"dateAsserted": ago(3).isoformat()}
    assert run([recent], "E4").verdict == "unknown"


def administration(code: str, day: Any, status: str = "completed") -> Resource:
    return {
        "resourceType": "MedicationAdministration",
        "id": f"ma-{code}-{day}",
        "status": status,
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]
        },
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": f"{day}T09:00:00+08:00",
    }


@pytest.mark.parametrize(
    ("days_ago", "expected"),
    [(0, "unknown"), (2, "unknown"), (13, "unknown"), (14, "pass")],
    ids=["today", "2-days-ago", "13-days-ago-day-14-of-the-course", "14-days-ago-course-over"],
)
def test_e4_an_anti_infective_dose_given_recently_is_a_course_running(
    days_ago: int, expected: str
) -> None:
    result = run([administration(AMOXICILLIN, ago(days_ago))], "E4")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert "default 14-day course from it" in result.reason


# ------------------------------------------------------------------ I6.anc
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("MedicationStatement", "completed"),
        ("MedicationStatement", "active"),
        ("MedicationRequest", "active"),
        ("MedicationDispense", "completed"),
    ],
)
def test_i6_anc_after_an_undated_gcsf_is_unknown_not_pass(kind: str, status: str) -> None:
    result = run([obs(ANC, 2.0, "10*9/L", days=2), undated(FILGRASTIM, kind, status)], "I6.anc")
    assert result.verdict == "unknown"
    assert "possibly within 14 days before the test" in result.reason


def test_i6_anc_an_undated_gcsf_that_ended_before_the_window_passes() -> None:
    ended = undated(FILGRASTIM, "MedicationStatement", "completed")
    ended["effectivePeriod"] = {"end": (AS_OF - timedelta(days=40)).isoformat()}
    assert run([obs(ANC, 2.0, "10*9/L", days=2), ended], "I6.anc").verdict == "pass"


# ------------------------------------------------------------------ I2 (SLEDAI-2K from labs)
SLEDAI_7 = [urine("13945-1", 12), c3(0.5, days_ago=5), wbc(2.5, days_ago=10)]  # 4 + 2 + 1


def test_i2_passing_only_by_a_low_count_an_undated_myelotoxic_drug_may_explain() -> None:
    drug = undated(AZATHIOPRINE, "MedicationStatement", "active")
    result = i2(*SLEDAI_7, drug)
    assert result.verdict == "unknown", result.reason
    assert "would be met, but Leukopenia" in result.reason
    assert "no date recorded: possibly taken then" in result.reason
    assert (item(result, "leukopenia").status, score_of(result).total) == ("withheld", 6)


def test_i2_an_undated_drug_that_is_not_myelotoxic_changes_nothing() -> None:
    assert i2(*SLEDAI_7, undated(AMOXICILLIN, "MedicationStatement", "active")).verdict == "pass"
