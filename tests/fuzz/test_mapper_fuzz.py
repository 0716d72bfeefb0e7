"""Property-based tests of the mappers and the screen (hypothesis): arbitrary JSON shaped like
the FHIR resources hospitals send never raises out of `map_resource` (other than MappingError),
`add_resources` or `evaluate`. An unreadable resource is reported as a Problem and skipped.

Resources start from the demo patients' records; parts of them are replaced by arbitrary JSON
(wrong types, missing or extra elements, odd text), so the mappers see near-misses, not noise.
Bounded examples, derandomized (a fixed seed): the same cases on every run."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.criteria.engine import evaluate
from service.facts import PatientFacts, Problem
from service.fetching import add_resources
from service.mappers import MappingError, map_resource
from tests.api.conftest import DEMO
from tests.conftest import load_nct, load_terms

TERMS = load_terms()
TRIAL = load_nct()
AS_OF = date(2026, 11, 20)
PATIENT = "Patient/p01"

SEEDS: list[dict[str, Any]] = [
    entry["resource"]
    for path in sorted(DEMO.glob("*.json"))[:6]
    for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]
]
KINDS = sorted({r["resourceType"] for r in SEEDS})

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "Patient/p01", "2026-02-30", "2026-11-20T25:00:00Z", "mg/dL", "1e400"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path inside a JSON value."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """A demo resource with up to three parts replaced by arbitrary JSON; its patient kept (so
    the record is screened), its type one we map."""
    resource: Any = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(resource) if p[0] != "resourceType"]
        if not paths:
            break
        resource = _replace(resource, draw(st.sampled_from(paths)), draw(json_values))
    if draw(st.booleans()):
        resource = {**resource, draw(st.text(max_size=12)): draw(json_values)}
    resource["resourceType"] = draw(st.sampled_from(KINDS))
    return dict(resource)


@FUZZ
@given(resource=resources())
def test_map_resource_raises_nothing_but_mapping_error(resource: dict[str, Any]) -> None:
    try:
        map_resource(resource, TERMS, "fuzz")
    except MappingError:
        pass


@FUZZ
@given(batch=st.lists(resources(), min_size=1, max_size=6))
def test_the_screen_never_raises_an_unreadable_record_is_a_problem(
    batch: list[dict[str, Any]],
) -> None:
    facts = PatientFacts(PATIENT)
    add_resources(facts, batch, TERMS)
    result = evaluate(TRIAL, facts, AS_OF, TERMS)
    assert result.status in {"likely_eligible", "possibly_eligible", "ineligible"}
    for problem in facts.problems:
        assert isinstance(problem, Problem)
