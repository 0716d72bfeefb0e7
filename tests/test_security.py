"""The one scope rule (service/security.grants), as the README states it: a scope is granted
by itself or by `cohort-match/*.<the same action>`; nothing else is a wildcard."""

from __future__ import annotations

import pytest

from service.security import ANONYMOUS, grants

MATCH = "cohort-match/match.read"
SWEEPS_READ = "cohort-match/sweeps.read"
SWEEPS_WRITE = "cohort-match/sweeps.write"


@pytest.mark.parametrize(
    ("held", "wanted", "granted"),
    [
        ("cohort-match/match.read", MATCH, True),
        ("cohort-match/*.read", MATCH, True),
        ("cohort-match/*.read", "cohort-match/candidates.read", True),
        ("cohort-match/*.read", SWEEPS_READ, True),
        ("cohort-match/*.read", SWEEPS_WRITE, False),  # reading never grants writing
        ("cohort-match/*.write", SWEEPS_WRITE, True),
        ("cohort-match/*.write", SWEEPS_READ, False),  # nor writing reading
        ("cohort-match/sweeps.write", SWEEPS_READ, False),
        ("cohort-match/sweeps.read", MATCH, False),
        ("cohort-match/candidates.read", MATCH, False),
        ("cohort-match/*.*", MATCH, False),  # SMART v1's `*` action is not honoured
        ("cohort-match/*.*", SWEEPS_WRITE, False),
        ("cohort-match/*", MATCH, False),
        ("cohort-match/*.rs", MATCH, False),  # a SMART v2 spelling is not an alias
        ("user/*.read", MATCH, False),  # an EHR's FHIR scopes grant nothing here
        ("user/*.*", SWEEPS_WRITE, False),
        ("system/*.*", SWEEPS_READ, False),
        ("patient/*.rs", MATCH, False),
        ("other-app/*.read", MATCH, False),
        ("*/*.read", MATCH, False),
        ("", MATCH, False),
    ],
)
def test_the_one_wildcard_rule(held: str, wanted: str, granted: bool) -> None:
    assert grants(frozenset(held.split()), wanted) is granted


def test_with_auth_disabled_the_anonymous_caller_may_do_everything() -> None:
    assert all(grants(ANONYMOUS.scopes, s) for s in (MATCH, SWEEPS_READ, SWEEPS_WRITE))
