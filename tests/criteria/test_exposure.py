"""exposure(): which days a medication record covers, the one policy every rule uses.

Recorded or derived end, else the value set's default course, else active/on-hold runs to the
day asked, else the start day only; never past the day asked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.criteria.exposure import Exposure, default_course_days, exposure, undated
from service.facts import MedicationExposure
from service.mappers import map_resource
from service.terminology import Terminology
from tests.conftest import load_terms
from tests.medication_terms import terms_with

DAY = date(2026, 11, 27)
START = date(2026, 10, 1)
ANTI_INFECTIVES = frozenset({"anti_infectives_systemic"})


@pytest.fixture(scope="module")
def course_terms(tmp_path_factory: pytest.TempPathFactory) -> Terminology:
    """Anti-infectives with a 14-day default course (the datarx data change), and gcsf with
    a 5-day one, to test the shortest of several."""
    return terms_with(
        tmp_path_factory.mktemp("course"),
        {
            "anti_infectives_systemic": {"default_course_days": 14},
            "gcsf": {"default_course_days": 5},
        },
    )


def med(
    status: str = "completed",
    start: date | None = START,
    end: date | None = None,
    concepts: frozenset[str] = frozenset({"sle_immunosuppressants"}),
    end_basis: str | None = None,
) -> MedicationExposure:
    return MedicationExposure(
        reference="MedicationRequest/m1",
        codes=(),
        concepts=concepts,
        status=status,
        start=start,
        end=end,
        end_basis=end_basis,
    )


def mapped(resource: dict[str, Any], terms: Terminology) -> MedicationExposure:
    found = map_resource(resource, terms)
    assert found is not None
    assert isinstance(found.fact, MedicationExposure)
    return found.fact


def amoxicillin_order_1980() -> dict[str, Any]:
    """An order migrated from an old system: still `active`, no end, no supply."""
    return {
        "resourceType": "MedicationRequest",
        "id": "amox-1980",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "723",
                    "display": "amoxicillin",
                }
            ],
            "text": "Amoxicillin 500 mg capsule",
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "1980-03-01T10:15:00+08:00",
        "dosageInstruction": [
            {
                "text": "500 mg three times a day",
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
            }
        ],
    }


def test_recorded_end() -> None:
    found = exposure(med(end=date(2026, 10, 20)), DAY, load_terms())
    assert found == Exposure(START, date(2026, 10, 20), "recorded end")


def test_recorded_end_is_cut_at_the_day_asked() -> None:
    found = exposure(med(end=date(2027, 3, 1)), DAY, load_terms())
    assert found is not None
    assert found.end == DAY


def test_derived_end_names_how_it_was_found() -> None:
    record = med(end=date(2026, 10, 30), end_basis="daysSupply 30 days")
    assert exposure(record, DAY, load_terms()) == Exposure(
        START, date(2026, 10, 30), "daysSupply 30 days"
    )


@pytest.mark.parametrize("status", ["active", "on-hold", "in-progress"])
def test_running_status_without_end_runs_to_the_day_asked(status: str) -> None:
    found = exposure(med(status), DAY, load_terms())
    assert found is not None
    assert (found.start, found.end) == (START, DAY)
    assert "counted up to 2026-11-27" in found.basis


@pytest.mark.parametrize("status", ["completed", "stopped", "unknown"])
def test_finished_status_without_end_is_the_start_day_only(status: str) -> None:
    found = exposure(med(status), DAY, load_terms())
    assert found is not None
    assert (found.start, found.end) == (START, START)


def test_no_start_date_is_no_exposure() -> None:
    assert exposure(med("active", start=None), DAY, load_terms()) is None


def test_a_record_starting_after_the_day_asked_covers_its_start_only() -> None:
    found = exposure(med("active", start=date(2026, 12, 5)), DAY, load_terms())
    assert found is not None
    assert (found.start, found.end) == (date(2026, 12, 5), date(2026, 12, 5))


def test_an_end_before_the_start_is_the_start_day() -> None:
    found = exposure(med(end=date(2026, 9, 1)), DAY, load_terms())
    assert found is not None
    assert (found.start, found.end) == (START, START)


def test_default_course_overrides_an_active_status(course_terms: Terminology) -> None:
    record = med("active", concepts=frozenset({"anti_infectives_systemic"}))
    found = exposure(record, DAY, course_terms)
    assert found == Exposure(START, date(2026, 10, 14), "no end recorded: default 14-day course")


@pytest.mark.parametrize(
    ("day", "covered"),
    [
        pytest.param(date(2026, 10, 14), True, id="day-14-covered"),
        pytest.param(date(2026, 10, 15), False, id="day-15-not"),
    ],
)
def test_default_course_boundary(course_terms: Terminology, day: date, covered: bool) -> None:
    record = med("active", concepts=frozenset({"anti_infectives_systemic"}))
    found = exposure(record, date(2026, 11, 27), course_terms)
    assert found is not None
    assert (found.start <= day <= found.end) is covered


def test_a_recorded_end_beats_the_default_course(course_terms: Terminology) -> None:
    record = med(end=date(2026, 11, 1), concepts=frozenset({"anti_infectives_systemic"}))
    found = exposure(record, DAY, course_terms)
    assert found is not None
    assert found.end == date(2026, 11, 1)


def test_the_shortest_default_course_of_several_value_sets(course_terms: Terminology) -> None:
    record = med("active", concepts=frozenset({"anti_infectives_systemic", "gcsf"}))
    assert default_course_days(record, course_terms) == 5


def test_no_default_course_without_the_key() -> None:
    assert default_course_days(med(concepts=frozenset({"gcsf"})), load_terms()) is None


def test_a_1980_antibiotic_order_is_not_current_in_2026(course_terms: Terminology) -> None:
    record = mapped(amoxicillin_order_1980(), course_terms)
    assert record.end is None  # nothing in the record gives one
    found = exposure(record, DAY, course_terms)
    assert found is not None
    assert (found.start, found.end) == (date(1980, 3, 1), date(1980, 3, 14))
    assert not found.start <= DAY <= found.end


def test_without_a_default_course_the_1980_active_order_would_run_on(tmp_path: Path) -> None:
    """What the default prevents: the status rule alone keeps an active order running."""
    terms = terms_with(tmp_path, {"anti_infectives_systemic": {"default_course_days": None}})
    found = exposure(mapped(amoxicillin_order_1980(), terms), DAY, terms)
    assert found is not None
    assert found.end == DAY


def test_the_default_applies_to_the_start_day_of_a_single_day_record(
    course_terms: Terminology,
) -> None:
    record = replace(med(concepts=frozenset({"anti_infectives_systemic"})), status="completed")
    found = exposure(record, DAY, course_terms)
    assert found is not None
    assert found.end == date(2026, 10, 14)


def administration(day: date, end: date | None, concepts: frozenset[str]) -> MedicationExposure:
    return replace(
        med(start=day, end=end, concepts=concepts), resource_type="MedicationAdministration"
    )


def test_an_administration_is_a_dose_of_a_default_course(course_terms: Terminology) -> None:
    """IV ceftriaxone given on one day is a dose of a course, not the course: with a class
    default the course runs that many days from it (never past the day asked)."""
    dose = administration(date(2026, 11, 25), date(2026, 11, 25), ANTI_INFECTIVES)
    found = exposure(dose, DAY, course_terms)
    assert found == Exposure(
        date(2026, 11, 25),
        DAY,
        "a dose given 2026-11-25: default 14-day course from it",
    )
    infusion = administration(date(2026, 11, 1), date(2026, 11, 2), ANTI_INFECTIVES)
    assert exposure(infusion, DAY, course_terms).end == date(2026, 11, 14)
    longer = administration(date(2026, 10, 1), date(2026, 10, 30), ANTI_INFECTIVES)
    assert exposure(longer, DAY, course_terms).end == date(2026, 10, 30)  # recorded, longer


def test_an_administration_without_a_default_course_is_its_own_day(
    course_terms: Terminology,
) -> None:
    dose = administration(date(2026, 11, 25), date(2026, 11, 25), frozenset({"cyclophosphamide"}))
    assert exposure(dose, DAY, course_terms).end == date(2026, 11, 25)


@pytest.mark.parametrize(
    ("status", "end", "running_only", "expected"),
    [
        pytest.param("active", None, True, True, id="active-may-run-today"),
        pytest.param("on-hold", None, True, True, id="on-hold-may-run-today"),
        pytest.param("completed", None, True, False, id="completed-not-taken-today"),
        pytest.param("completed", None, False, True, id="completed-may-be-in-a-window"),
        pytest.param("completed", date(2026, 9, 1), False, False, id="ended-before-the-window"),
        pytest.param("active", date(2026, 11, 20), False, True, id="ended-inside-the-window"),
    ],
)
def test_undated_records(status: str, end: date | None, running_only: bool, expected: bool) -> None:
    record = med(status=status, start=None, end=end)
    assert undated(record, date(2026, 11, 13), running_only) is expected
    assert not undated(med(status=status), date(2026, 11, 13), running_only)  # dated
