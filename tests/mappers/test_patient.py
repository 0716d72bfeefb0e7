"""Patient -> Demographics, including partial birth dates."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.facts import Demographics, Identifier
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


# ------------------------------------------------------------------ death and identifiers
REALWORLD = Path(__file__).parents[1] / "data" / "realworld"


def test_deceased_patient_with_identifiers_as_an_ehr_sends_it(terms: Terminology) -> None:
    resource = json.loads(
        (REALWORLD / "deceased-patient-with-chinese-identifiers.json").read_text(encoding="utf-8")
    )
    found = demographics(resource, terms)
    assert (found.deceased, found.deceased_date) == (True, date(2026, 9, 30))
    assert found.identifiers == (
        Identifier("ZY20260451", "http://hospital.example.cn/fhir/sid/mrn", "MR", "住院号"),
        Identifier("320102199003150022", "urn:oid:2.16.156.10011.1.1", "NNCHN", "身份证号"),
        # use=old is skipped; an identifier without a type keeps its system; no value: skipped
        Identifier("6217000010001234", "http://hospital.example.cn/fhir/sid/card", None, None),
    )


@pytest.mark.parametrize(
    ("fields", "deceased", "day"),
    [
        pytest.param({}, False, None, id="not-recorded"),
        pytest.param({"deceasedBoolean": False}, False, None, id="boolean-false"),
        pytest.param({"deceasedBoolean": True}, True, None, id="boolean-true-no-date"),
        pytest.param({"deceasedDateTime": "2025-02"}, True, date(2025, 2, 1), id="partial-date"),
        pytest.param(
            {"deceasedDateTime": "2026-11-20T23:30:00-05:00"},
            True,
            date(2026, 11, 20),
            id="date-time-its-own-day",
        ),
    ],
)
def test_deceased(
    terms: Terminology, fields: dict[str, Any], deceased: bool, day: date | None
) -> None:
    found = demographics({**patient(), **fields}, terms)
    assert (found.deceased, found.deceased_date) == (deceased, day)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"deceasedBoolean": "yes"}, "deceasedBoolean", id="boolean-as-text"),
        pytest.param({"deceasedDateTime": "30/09/2026"}, "not a FHIR date", id="bad-date"),
        pytest.param({"identifier": {"value": "1"}}, "identifier", id="identifier-not-a-list"),
        pytest.param({"identifier": ["MR1"]}, "identifier", id="identifier-not-an-object"),
    ],
)
def test_malformed_death_or_identifier_raises(
    terms: Terminology, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(MappingError, match=message):
        map_resource({**patient(), **fields}, terms)


def test_identifier_type_prefers_the_v2_code_and_falls_back_to_display(
    terms: Terminology,
) -> None:
    local = {"system": "http://hospital.example/types", "code": "CHART", "display": "Chart"}
    v2 = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
    found = demographics(
        {
            **patient(),
            "identifier": [
                {"type": {"coding": [local, v2]}, "value": "0012345"},
                {"type": {"coding": [local]}, "value": "C-77"},
            ],
        },
        terms,
    )
    assert [(i.type, i.label, i.value) for i in found.identifiers] == [
        ("MR", None, "0012345"),
        ("CHART", "Chart", "C-77"),
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(
            [
                {"use": "usual", "given": ["Jo"]},
                {"use": "official", "family": "Doe", "given": ["Jane", "Q"]},
            ],
            "Jane Q Doe",
            id="official-wins",
        ),
        pytest.param(
            [{"use": "old", "text": "Jane Roe"}, {"family": "Doe"}], "Doe", id="old-skipped"
        ),
        pytest.param([{"text": "  王   小明 "}], "王 小明", id="text-as-sent"),
        pytest.param([{"use": "old", "text": "Jane Roe"}], None, id="only-old"),
        pytest.param([{"given": [3]}, "x"], None, id="malformed"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_the_name_a_coordinator_reads(names: Any, expected: str | None, terms: Terminology) -> None:
    resource = patient()
    if names is not None:
        resource["name"] = names
    assert demographics(resource, terms).name == expected
