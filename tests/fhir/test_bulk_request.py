"""Building a Bulk Data kick-off (service/fhir/bulk/request.py): pure, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.fhir.bulk.request import NDJSON, ExportRequest, Level, fhir_instant

SINCE = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize(
    ("level", "kind", "path"),
    [
        ("system", "system", "$export"),
        ("patient", "patient", "Patient/$export"),
        ("g1", "group", "Group/g1/$export"),
        ("Group/g-2", "group", "Group/g-2/$export"),
    ],
)
def test_levels_parse_to_their_endpoint(level: str, kind: str, path: str) -> None:
    parsed = Level.parse(level)
    assert parsed.kind == kind
    assert parsed.path() == path


@pytest.mark.parametrize("level", ["", "Group/", "a b", "Group/x/y", "x" * 65])
def test_a_bad_level_is_refused(level: str) -> None:
    with pytest.raises(ValueError, match="level must be"):
        Level.parse(level)


def test_the_query_names_format_types_since_and_repeats_type_filters() -> None:
    request = ExportRequest(
        Level.parse("system"),
        ("Patient", "Observation"),
        ("Observation?code=a", "Observation?code=b"),
        SINCE,
        "GET",
    )
    assert request.query() == [
        ("_outputFormat", NDJSON),
        ("_type", "Patient,Observation"),
        ("_since", "2026-11-20T08:30:00.123Z"),
        ("_typeFilter", "Observation?code=a"),
        ("_typeFilter", "Observation?code=b"),
    ]


def test_the_post_form_is_a_parameters_resource_with_since_as_an_instant() -> None:
    request = ExportRequest(Level.parse("patient"), ("Patient",), (), SINCE, "POST")
    assert request.parameters() == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_outputFormat", "valueString": NDJSON},
            {"name": "_type", "valueString": "Patient"},
            {"name": "_since", "valueInstant": "2026-11-20T08:30:00.123Z"},
        ],
    }


def test_no_types_and_no_since_leave_the_parameters_out() -> None:
    request = ExportRequest(Level.parse("system"), (), (), None, "GET")
    assert request.query() == [("_outputFormat", NDJSON)]


def test_instants_are_utc_with_milliseconds_and_naive_times_refused() -> None:
    assert fhir_instant(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        fhir_instant(datetime(2026, 1, 2))
