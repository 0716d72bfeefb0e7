"""Procedure -> ProcedureRecord."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import ProcedureRecord
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import HEMODIALYSIS, procedure
from tests.realworld import LOCAL, coding, ehr_procedure, review_terms


def record(resource: dict[str, Any], terms: Terminology) -> ProcedureRecord:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, ProcedureRecord)
    return mapped.fact


def test_maps_dialysis(terms: Terminology) -> None:
    resource = procedure(HEMODIALYSIS, days=3)
    found = record(resource, terms)
    assert found.reference == f"Procedure/{resource['id']}"
    assert "dialysis" in found.concepts
    assert found.performed == date(2026, 11, 24)


@pytest.mark.parametrize("status", ["completed", "in-progress"])
def test_counted_statuses(terms: Terminology, status: str) -> None:
    assert record(procedure(HEMODIALYSIS, days=3, status=status), terms).status == status


@pytest.mark.parametrize(
    "status", ["preparation", "not-done", "on-hold", "stopped", "entered-in-error", "unknown"]
)
def test_other_statuses_are_dropped(terms: Terminology, status: str) -> None:
    assert map_resource(procedure(HEMODIALYSIS, days=3, status=status), terms) is None


def test_performed_period_end_preferred(terms: Terminology) -> None:
    resource = procedure(HEMODIALYSIS, days=3)
    del resource["performedDateTime"]
    resource["performedPeriod"] = {
        "start": "2026-11-01T08:00:00+08:00",
        "end": "2026-11-01T12:00:00+08:00",
    }
    assert record(resource, terms).performed == date(2026, 11, 1)
    resource["performedPeriod"] = {"start": "2026-11-02"}
    assert record(resource, terms).performed == date(2026, 11, 2)


def test_code_no_trial_uses_is_dropped(terms: Terminology) -> None:
    assert map_resource(procedure("80146002", days=3), terms) is None  # appendectomy


def test_bad_date_raises_mapping_error_naming_it(terms: Terminology) -> None:
    resource = procedure(HEMODIALYSIS, days=3)
    resource["performedDateTime"] = "yesterday"
    with pytest.raises(MappingError, match=f"^Procedure/{resource['id']}: not a FHIR date"):
        map_resource(resource, terms)


# ------------------------------------------------------------------ unmapped is not absent
CPT = "http://www.ama-assn.org/go/cpt"


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(ehr_procedure(coding(CPT, "90935", "Hemodialysis procedure")), id="cpt"),
        pytest.param(ehr_procedure(coding(LOCAL, "XT-01"), text="血液透析"), id="local-chinese"),
        pytest.param(ehr_procedure(text="Peritoneal dialysis exchange"), id="text-only"),
    ],
)
def test_unlisted_dialysis_is_kept_for_review(resource: dict[str, Any]) -> None:
    found = record(resource, review_terms())
    assert found.concepts == frozenset()
    assert "dialysis" in found.review


def test_unlisted_procedure_with_unrelated_text_is_dropped() -> None:
    resource = ehr_procedure(coding(CPT, "44950", "Appendectomy"))
    assert map_resource(resource, review_terms()) is None


def test_performed_as_text_or_age_has_no_date(terms: Terminology) -> None:
    resource = procedure(HEMODIALYSIS, days=3)
    del resource["performedDateTime"]
    resource["performedString"] = "2019年"
    assert record(resource, terms).performed is None
