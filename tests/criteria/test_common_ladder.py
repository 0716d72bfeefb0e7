"""service/criteria/common.py: the fail / unclear / unreadable / pass ladder (`decide`) every
record-based rule uses, and the review reason for records no value set knows."""

from __future__ import annotations

from typing import Any

import pytest

from service.criteria.common import Findings, decide, review_reason
from service.criteria.verdict import Evidence, Verdict
from service.facts import Code
from tests.conftest import load_terms


# ------------------------------------------------------------------ the ladder (decide)
def _ev(reference: str) -> Evidence:
    return Evidence(reference=reference)


def _decide(found: Findings, problem: str | None = None, **kwargs: Any) -> Verdict:
    return decide(
        found,
        decided=lambda first: f"decided by {first.reference}",
        problem=problem,
        nothing="nothing found",
        only_shown="only shown",
        absent="no record",
        **kwargs,
    )


def test_ladder_decisive_beats_doubt_and_orders_evidence() -> None:
    found = Findings(decisive=[_ev("A")], doubts=[("unclear", _ev("B"))], shown=[_ev("C")])
    verdict = _decide(found, problem="1 Condition record(s) could not be read")
    assert (verdict.verdict, verdict.reason) == ("fail", "decided by A")
    assert [e.reference for e in verdict.evidence] == ["A", "B", "C"]


def test_ladder_doubt_beats_unreadable() -> None:
    found = Findings(doubts=[("first doubt", _ev("B")), ("second", _ev("D"))], shown=[_ev("C")])
    verdict = _decide(found, problem="unreadable")
    assert (verdict.verdict, verdict.reason) == ("unknown", "first doubt")
    assert [e.reference for e in verdict.evidence] == ["B", "D", "C"]


def test_ladder_unreadable_is_not_absent() -> None:
    verdict = _decide(Findings(shown=[_ev("C")]), problem="1 Condition record(s) could not be read")
    assert verdict.verdict == "unknown"
    assert verdict.reason == "nothing found, but 1 Condition record(s) could not be read"


@pytest.mark.parametrize(
    ("decisive_verdict", "found", "expected", "reason"),
    [
        pytest.param("fail", Findings(), "pass", "no record", id="exclusion-absent-pass"),
        pytest.param("fail", Findings(shown=[_ev("C")]), "pass", "only shown", id="shown-pass"),
        pytest.param("pass", Findings(), "fail", "no record", id="required-absent-fail"),
        pytest.param("pass", Findings(decisive=[_ev("A")]), "pass", "decided by A", id="met"),
    ],
)
def test_ladder_bottom_rung(
    decisive_verdict: str, found: Findings, expected: str, reason: str
) -> None:
    verdict = _decide(found, decisive_verdict=decisive_verdict)
    assert (verdict.verdict, verdict.reason) == (expected, reason)


@pytest.mark.parametrize(
    ("codes", "text", "expected"),
    [
        pytest.param(
            (Code("http://snomed.info/sct", "1287654001", "Lupus nephritis"),),
            None,
            "possible Systemic lupus erythematosus (established diagnosis): 'Lupus nephritis' "
            "(SNOMED CT 1287654001, not in the value set): review",
            id="display",
        ),
        pytest.param(
            (Code("http://hl7.org/fhir/sid/icd-10-cm", "M32"),),
            None,
            "possible Systemic lupus erythematosus (established diagnosis): 'M32' "
            "(ICD-10-CM M32, not in the value set): review",
            id="code-only",
        ),
        pytest.param(
            (),
            "狼疮",
            "possible Systemic lupus erythematosus (established diagnosis): '狼疮' "
            "(no code, not in the value set): review",
            id="text-only",
        ),
    ],
)
def test_review_reason(codes: tuple[Code, ...], text: str | None, expected: str) -> None:
    assert review_reason(load_terms(), "sle", codes, text) == expected
