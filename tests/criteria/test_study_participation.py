"""E12: participation in another clinical trial within 3 months before AS_OF (2026-11-27).

Three months before AS_OF is 2026-08-27: a study that ended that day was ongoing within the
window; one that ended the day before was not.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.worklist.research_subject import research_subject, status_map
from tests.conftest import run
from tests.factories import PATIENT, study

WINDOW_START = "2026-08-27"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [study("OTHER-1", status="on-study", start="2026-01-01")],
            "fail",
            id="ongoing-other-study-fail",
        ),
        pytest.param(
            [study("OTHER-1", status="off-study", start="2026-01-01", end=WINDOW_START)],
            "fail",
            id="ended-exactly-3-months-ago-fail",
        ),
        pytest.param(
            [study("OTHER-1", status="off-study", start="2026-01-01", end="2026-08-26")],
            "pass",
            id="ended-3-months-and-a-day-ago-pass",
        ),
        pytest.param(
            [study("OTHER-1", status="follow-up", start="2025-01-01", end="2025-06-01")],
            "pass",
            id="ended-last-year-pass",
        ),
        pytest.param(
            [study("OTHER-1", status="off-study", start="2026-10-01")],
            "fail",
            id="withdrawn-no-end-but-started-within-3-months-fail",
        ),
        pytest.param(
            [study("NCT06946485", status="on-study", start="2026-11-01")],
            "pass",
            id="this-trial-is-not-another-pass",
        ),
        pytest.param(
            [study("OTHER-1", status="candidate", start="2026-11-01")],
            "pass",
            id="candidate-never-enrolled-pass",
        ),
        pytest.param(
            [study("OTHER-1", status="on-study", start="2026-12-01")],
            "pass",
            id="starts-after-as-of-pass",
        ),
        pytest.param([], "pass", id="no-record-pass"),
    ],
)
def test_e12_study_participation(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "E12")
    assert result.verdict == expected, result.reason


def test_e12_old_study_without_end_date_is_unknown() -> None:
    """Off study, end not recorded, started long ago: it may have ended within 3 months."""
    result = run([study("OTHER-1", status="off-study", start="2024-01-01")], "E12")
    assert result.verdict == "unknown", result.reason


def test_e12_unreadable_research_subject_is_unknown() -> None:
    broken = study("OTHER-1", status="on-study", start="2026-01-01")
    broken["study"] = {}
    result = run([broken], "E12")
    assert result.verdict == "unknown"
    assert "ResearchSubject" in result.reason


def test_e12_no_record_reason() -> None:
    assert run([], "E12").reason == "no record of participation in another clinical trial"


@pytest.mark.parametrize("status", sorted({*status_map().written.values(), *status_map().read}))
def test_e12_our_own_research_subject_for_this_trial_is_not_another_trial(status: str) -> None:
    """The ResearchSubject cohort-match writes for this trial (a sweep's, or a decision's
    written back: on-study once enrolled), also as the EHR may change it (a period added)."""
    ours = research_subject("NCT06946485", PATIENT, status)
    assert run([ours], "E12").verdict == "pass"
    dated = ours | {"period": {"start": "2026-11-01"}}
    assert run([dated], "E12").verdict == "pass"


def test_e12_the_same_resource_for_another_trial_counts() -> None:
    theirs = research_subject("NCT00000001", PATIENT, "on-study")
    result = run([theirs], "E12")
    assert result.verdict == "fail", result.reason
    assert "ResearchStudy/cm-NCT00000001" in result.reason


def ctms_research_subject(study_ref: dict[str, Any], status: str = "on-study") -> dict[str, Any]:
    """A ResearchSubject as a CTMS sends it: a server id for the study, the NCT number in the
    display or identifier, a period with an offset."""
    return {
        "resourceType": "ResearchSubject",
        "id": "rs-ctms-1",
        "status": status,
        "study": study_ref,
        "individual": {"reference": "Patient/p1"},
        "period": {"start": "2026-11-01T09:00:00+08:00"},
    }


@pytest.mark.parametrize(
    ("study_ref", "expected"),
    [
        pytest.param({"reference": "ResearchStudy/nct06946485"}, "pass", id="lower-case-id"),
        pytest.param(
            {"reference": "ResearchStudy/7731", "display": "NCT06946485 CHT101 CAR-T"},
            "pass",
            id="nct-in-display",
        ),
        pytest.param(
            {
                "reference": "ResearchStudy/7731",
                "identifier": {"system": "https://clinicaltrials.gov", "value": "NCT06946485"},
            },
            "pass",
            id="nct-in-identifier",
        ),
        pytest.param(
            {"reference": "ResearchStudy/7731", "display": "NCT05000000 anifrolumab"},
            "fail",
            id="another-trial-fail",
        ),
    ],
)
def test_e12_this_trial_named_anywhere_in_the_study_reference(
    study_ref: dict[str, Any], expected: str
) -> None:
    result = run([ctms_research_subject(study_ref)], "E12")
    assert result.verdict == expected, result.reason


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ("pending-on-study", "status enrolled, not started"),
        ("active", "status unread: 'active'"),  # not an R4 code: could be on study
        (None, "status unread: 'not recorded'"),
    ],
)
def test_e12_another_study_the_record_cannot_place_is_unknown(status: str | None, why: str) -> None:
    record = study("OTHER-9", status="on-study", start="2026-10-01")
    if status is None:
        del record["status"]
    else:
        record["status"] = status
    result = run([record], "E12")
    assert result.verdict == "unknown"
    assert why in result.reason


def test_e12_status_in_capitals_is_read() -> None:
    assert run([study("OTHER-9", status="ON-STUDY", start="2026-10-01")], "E12").verdict == "fail"


def test_e12_screening_for_another_study_is_not_participation() -> None:
    assert run([study("OTHER-9", status="screening", start="2026-10-01")], "E12").verdict == "pass"
