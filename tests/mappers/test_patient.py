"""Patient -> Demographics, including partial birth dates."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import Demographics
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import patient


def demographics(resource: dict[str, Any], terms: Terminology) -> Demographics:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, Demographics)
    assert mapped.patient == mapped.fact.reference
    return mapped.fact


@pytest.mark.parametrize(
    ("birth", "earliest", "latest"),
    [
        pytest.param("1980-06-15", date(1980, 6, 15), date(1980, 6, 15), id="full-date"),
        pytest.param("1980", date(1980, 1, 1), date(1980, 12, 31), id="year-only"),
        pytest.param("1980-06", date(1980, 6, 1), date(1980, 6, 30), id="month-only"),
        pytest.param("1980-02", date(1980, 2, 1), date(1980, 2, 29), id="february-leap-year"),
        pytest.param("1981-02", date(1981, 2, 1), date(1981, 2, 28), id="february-common-year"),
        pytest.param(None, None, None, id="not-recorded"),
    ],
)
def test_birth_date_range(
    terms: Terminology, birth: str | None, earliest: date | None, latest: date | None
) -> None:
    found = demographics(patient(birth), terms)
    assert (found.birth_date, found.birth_date_latest) == (earliest, latest)


@pytest.mark.parametrize(
    ("gender", "sex"),
    [
        ("female", "female"),
        ("male", "male"),
        ("other", "other"),
        ("unknown", "unknown"),
        ("F", None),
        (None, None),
    ],
)
def test_sex(terms: Terminology, gender: str | None, sex: str | None) -> None:
    assert demographics(patient(gender=gender), terms).sex == sex


@pytest.mark.parametrize(
    "birth",
    [
        pytest.param("15/06/1980", id="day-first"),
        pytest.param("1980-02-30", id="impossible-day"),
        pytest.param("1980-13", id="month-13"),
        pytest.param(1980, id="number"),
    ],
)
def test_bad_birth_date_raises_mapping_error_naming_the_patient(
    terms: Terminology, birth: Any
) -> None:
    resource = patient()
    resource["birthDate"] = birth
    with pytest.raises(MappingError, match=r"^Patient/p1: not a FHIR date"):
        map_resource(resource, terms)


def test_patient_without_id_raises(terms: Terminology) -> None:
    resource = patient()
    del resource["id"]
    with pytest.raises(MappingError, match="Patient has no id"):
        map_resource(resource, terms)
