"""map_resource: dispatch, patient references, and robustness against malformed JSON.

Robustness: whatever a field of a resource is replaced with, map_resource returns a fact,
returns None, or raises MappingError naming the resource. Anything else would stop a sweep.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from service.mappers import MappingError, map_resource, problem_for, subject_of
from service.terminology import Terminology
from tests.factories import (
    ANAPHYLAXIS,
    HEMODIALYSIS,
    HGB,
    HIV,
    NEGATIVE,
    PENICILLIN,
    PREDNISONE,
    RXNORM,
    SLE,
    UCUM,
    allergy,
    condition,
    contained_request,
    medication,
    obs,
    patient,
    procedure,
    study,
)

JUNK: list[Any] = [None, "", "x", 7, -1.5, True, [], {}, ["x"], [{}], [None], {"x": 1}]


def valid_resources() -> list[dict[str, Any]]:
    return [
        patient("1980-06", "female"),
        obs(HGB, 6.2, "g/dL", ref_high=16, comparator="<", interpretation="L"),
        obs(HIV, coded=NEGATIVE),
        condition(SLE, onset="2019-01-01", abatement="2020-01-01"),
        medication(PREDNISONE, start="2024-01-01", end="2024-02-01", dose_mg=30, per_day=2),
        medication(
            PREDNISONE, start="2024-01-01", dose_mg=30, kind="MedicationRequest", status="active"
        ),
        contained_request(
            (RXNORM, PREDNISONE),
            dose={"value": 2, "unit": "{tablet}", "system": UCUM, "code": "{tablet}"},
            frequency=2,
            start=date(2024, 1, 1),
        ),
        allergy(
            PENICILLIN,
            criticality="high",
            severity="severe",
            manifestation=ANAPHYLAXIS,
            recorded="2020",
        ),
        procedure(HEMODIALYSIS, days=3),
        study("OTHER-1", status="on-study", start="2026-01-01", end="2026-06-01"),
    ]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key/index path in a JSON tree, except resourceType (which selects the mapper)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if prefix == () and key == "resourceType":
                continue
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from paths(value, (*prefix, index))


def replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


@pytest.mark.parametrize(
    "resource", valid_resources(), ids=lambda r: f"{r['resourceType']}-{r['id']}"
)
def test_valid_resource_maps(terms: Terminology, resource: dict[str, Any]) -> None:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert mapped.patient == "Patient/p1"


@pytest.mark.parametrize(
    "resource", valid_resources(), ids=lambda r: f"{r['resourceType']}-{r['id']}"
)
def test_any_malformed_field_is_a_mapping_error_or_ignored(
    terms: Terminology, resource: dict[str, Any]
) -> None:
    name = f"{resource['resourceType']}/{resource['id']}"
    errors = 0
    for path in paths(resource):
        for junk in JUNK:
            broken = replaced(resource, path, junk)
            message = None
            try:
                map_resource(broken, terms)
            except MappingError as exc:
                message = str(exc)
            except Exception as exc:  # the failure message is the point
                pytest.fail(f"{name} with {path}={junk!r} raised {type(exc).__name__}: {exc}")
            if message is not None:
                errors += 1
                if path != ("id",):
                    assert message.startswith(f"{name}: "), (path, junk, message)
    assert errors > 0  # the mutations did reach the mapper


@pytest.mark.parametrize(
    "resource", valid_resources()[1:], ids=lambda r: f"{r['resourceType']}-{r['id']}"
)
def test_every_fact_keeps_where_it_was_read(terms: Terminology, resource: dict[str, Any]) -> None:
    mapped = map_resource(resource, terms, source="export/part-1.ndjson:7")
    assert mapped is not None
    assert mapped.fact.source == "export/part-1.ndjson:7"  # type: ignore[union-attr]
    # A resource fetched by its reference is read "from" itself: nothing to add.
    own = f"{resource['resourceType']}/{resource['id']}"
    mapped = map_resource(resource, terms, source=own)
    assert mapped is not None
    assert mapped.fact.source is None  # type: ignore[union-attr]


def test_unused_resource_types_are_ignored(terms: Terminology) -> None:
    assert map_resource({"resourceType": "Encounter", "id": "e1"}, terms) is None
    assert map_resource({"resourceType": 7}, terms) is None
    assert map_resource({}, terms) is None


@pytest.mark.parametrize(
    ("reference", "patient"),
    [
        pytest.param("Patient/p1", "Patient/p1", id="relative"),
        pytest.param("https://fhir.example/r4/Patient/p1", "Patient/p1", id="absolute"),
        pytest.param("Patient/p1/_history/3", "Patient/p1", id="versioned"),
        pytest.param("Patient/p1/", "Patient/p1", id="trailing-slash"),
        pytest.param("Patient//p1", None, id="empty-segment"),
        pytest.param(
            "urn:uuid:0d6f5e0c-1111-4a5b-9c2d-3e4f5a6b7c8d",
            "urn:uuid:0d6f5e0c-1111-4a5b-9c2d-3e4f5a6b7c8d",
            id="bundle-uuid",
        ),
        pytest.param("Group/g1", None, id="not-a-patient"),
        pytest.param("Patient/", None, id="no-id"),
    ],
)
def test_subject_reference_forms(reference: str, patient: str | None) -> None:
    resource = obs(HGB, 120, "g/L")
    resource["subject"] = {"reference": reference}
    assert subject_of(resource) == patient


def test_problem_for_unreadable_resource_without_patient_is_none() -> None:
    resource = obs(HGB, 120, "g/L")
    del resource["subject"]
    assert problem_for(resource, "bad", "f:1") is None
    assert problem_for("not a resource", "bad", "f:1") is None


def test_problem_for_keeps_type_and_place() -> None:
    mapped = problem_for(condition(SLE), "bad date", "conditions.ndjson:12")
    assert mapped is not None
    assert (mapped.fact.resource_type, mapped.fact.where, mapped.fact.message) == (  # type: ignore[union-attr]
        "Condition",
        "conditions.ndjson:12",
        "bad date",
    )
