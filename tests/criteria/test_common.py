"""Time windows: which result is the latest, and whether it is recent enough to decide."""

from __future__ import annotations

from datetime import date

import pytest

from service.criteria.common import first_in_window, latest_in_window, on_or_before
from service.facts import LabResult
from tests.conftest import AS_OF
from tests.factories import ago


def lab(reference: str, effective: date | None) -> LabResult:
    return LabResult(reference, (), frozenset({"hemoglobin"}), effective, "final")


RESULTS = [
    lab("Observation/b", ago(10)),
    lab("Observation/undated", None),
    lab("Observation/a", ago(10)),  # same day as /b: the reference breaks the tie
    lab("Observation/later", ago(-1)),  # after as_of: does not exist yet
    lab("Observation/old", ago(100)),
]


def test_on_or_before_is_newest_first_with_ties_broken_by_reference() -> None:
    ordered = [r.reference for r in on_or_before(RESULTS, AS_OF)]
    assert ordered == ["Observation/b", "Observation/a", "Observation/old"]


@pytest.mark.parametrize(
    ("days", "found"), [(10, "Observation/b"), (9, None), (200, "Observation/b")]
)
def test_the_latest_result_decides_only_inside_the_window(days: int, found: str | None) -> None:
    latest = latest_in_window(RESULTS, AS_OF, days)
    assert (latest.reference if latest else None) == found
    first = first_in_window(on_or_before(RESULTS, AS_OF), AS_OF, days)
    assert first is latest


def test_an_older_result_never_stands_in_for_the_latest() -> None:
    history = on_or_before(RESULTS, AS_OF)
    assert first_in_window(history[2:], AS_OF, 90) is None  # /old is 100 days old
    assert first_in_window([], AS_OF, 90) is None
