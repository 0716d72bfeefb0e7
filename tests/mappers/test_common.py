"""mappers/common: dates as written, partial ones as the range of days they may be."""

from __future__ import annotations

from datetime import date

import pytest

from service.mappers.common import MappingError, parse_date_span
from service.mappers.patient import map_patient
from service.mappers.research_subject import map_research_subject


@pytest.mark.parametrize(
    ("value", "span"),
    [
        pytest.param("2021", (date(2021, 1, 1), date(2021, 12, 31)), id="year"),
        pytest.param("2024-02", (date(2024, 2, 1), date(2024, 2, 29)), id="month-leap-year"),
        pytest.param("2026-11", (date(2026, 11, 1), date(2026, 11, 30)), id="month"),
        pytest.param("2026-11-05", (date(2026, 11, 5), None), id="full-date-no-range"),
        pytest.param("2026-11-05T23:30:00+08:00", (date(2026, 11, 5), None), id="datetime"),
        pytest.param(None, (None, None), id="absent"),
    ],
)
def test_parse_date_span(value: str | None, span: tuple[date | None, date | None]) -> None:
    assert parse_date_span(value) == span


def test_parse_date_span_rejects_what_is_no_date() -> None:
    with pytest.raises(MappingError):
        parse_date_span("2026-13")


def test_a_partial_date_of_death_keeps_its_range() -> None:
    found = map_patient({"resourceType": "Patient", "id": "p", "deceasedDateTime": "2026"})
    assert (found.deceased_date, found.deceased_date_latest) == (
        date(2026, 1, 1),
        date(2026, 12, 31),
    )
    full = map_patient({"resourceType": "Patient", "id": "p", "deceasedDateTime": "2026-03-04"})
    assert full.deceased_date_latest is None


def test_a_partial_study_end_keeps_its_range() -> None:
    found = map_research_subject(
        {
            "resourceType": "ResearchSubject",
            "id": "rs",
            "status": "off-study",
            "study": {"reference": "ResearchStudy/x"},
            "period": {"start": "2025-10-14", "end": "2026-08"},
        }
    )
    assert found is not None
    assert (found.start, found.start_latest) == (date(2025, 10, 14), None)
    assert (found.end, found.end_latest) == (date(2026, 8, 1), date(2026, 8, 31))
