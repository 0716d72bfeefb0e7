"""ResearchSubject -> StudyParticipation (R4)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import StudyParticipation
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import study


def participation(resource: dict[str, Any], terms: Terminology) -> StudyParticipation:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, StudyParticipation)
    assert mapped.patient == "Patient/p1"  # from `individual`, not `subject`
    return mapped.fact


def test_maps_study_status_and_period(terms: Terminology) -> None:
    resource = study("OTHER-1", status="off-study", start="2026-01-05", end="2026-06-30")
    found = participation(resource, terms)
    assert found.study == "ResearchStudy/OTHER-1"
    assert found.status == "off-study"
    assert (found.start, found.end) == (date(2026, 1, 5), date(2026, 6, 30))


@pytest.mark.parametrize(
    "status",
    [
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "follow-up",
        "off-study",
        "withdrawn",
    ],
)
def test_enrolled_statuses_are_kept(terms: Terminology, status: str) -> None:
    assert participation(study("X", status=status, start="2026-01-01"), terms).status == status


@pytest.mark.parametrize(
    "status",
    ["candidate", "eligible", "ineligible", "not-registered", "potential-candidate", "screening"],
)
def test_never_enrolled_statuses_are_dropped(terms: Terminology, status: str) -> None:
    assert map_resource(study("X", status=status, start="2026-01-01"), terms) is None


@pytest.mark.parametrize(
    ("sent", "read"),
    [("ON-STUDY", "on-study"), ("On Study", "on-study"), ("off_study", "off-study")],
)
def test_status_spellings_are_read_as_the_code(terms: Terminology, sent: str, read: str) -> None:
    assert participation(study("X", status=sent, start="2026-01-01"), terms).status == read


def test_enrolled_not_started_is_kept(terms: Terminology) -> None:
    resource = study("X", status="pending-on-study", start="2026-01-01")
    assert participation(resource, terms).status == "pending-on-study"


@pytest.mark.parametrize("sent", [None, "active", "入组"])
def test_a_status_missing_or_not_r4_is_kept_unread(terms: Terminology, sent: str | None) -> None:
    resource = study("X", status="on-study", start="2026-01-01")
    if sent is None:
        del resource["status"]
    else:
        resource["status"] = sent
    assert participation(resource, terms).status.startswith("unread: ")


@pytest.mark.parametrize(
    ("reference", "label"),
    [
        pytest.param({"identifier": {"value": "NCT01234567"}}, "NCT01234567", id="identifier"),
        pytest.param({"display": "Lupus nephritis study"}, "Lupus nephritis study", id="display"),
    ],
)
def test_study_label(terms: Terminology, reference: dict[str, Any], label: str) -> None:
    resource = study("X", status="on-study", start="2026-01-01")
    resource["study"] = reference
    assert participation(resource, terms).study == label


def test_missing_study_raises_mapping_error_naming_it(terms: Terminology) -> None:
    resource = study("X", status="on-study", start="2026-01-01")
    del resource["study"]
    with pytest.raises(MappingError, match=f"^ResearchSubject/{resource['id']}: .*names no study"):
        map_resource(resource, terms)


def test_bad_period_raises_mapping_error(terms: Terminology) -> None:
    resource = study("X", status="on-study", start="2026-01-01")
    resource["period"] = {"start": "January"}
    with pytest.raises(MappingError, match=f"^ResearchSubject/{resource['id']}: "):
        map_resource(resource, terms)
