"""`test_results`: three-valued logic over tests that read positive or negative.

`test_state` is also used by `diagnosis_excludes` (positive tests, e.g. hCG for pregnancy).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from service.criteria.common import (
    Context,
    compare_bounded,
    lab_evidence,
    older_evidence,
    on_or_before,
    title,
    window_days,
)
from service.criteria.model import TestResultsRule, TestSpec
from service.criteria.verdict import Evidence, Verdict
from service.facts import LabResult, PatientFacts

__all__ = ["TestState", "evaluate_test_results", "test_state"]

TestState = Literal["positive", "negative", "unknown"]


def test_state(
    spec: TestSpec, facts: PatientFacts, ctx: Context, days: int
) -> tuple[TestState, str, list[Evidence]]:
    """Whether one test reads positive or negative in the window, with why."""
    name = title(ctx.terms, spec.lab)
    history = on_or_before(facts.labs_for(spec.lab), ctx.as_of)
    start = ctx.as_of - timedelta(days=days)
    read = [
        (r, _read(spec, r, ctx))
        for r in history
        if r.effective is not None and r.effective >= start
    ]
    decided = [(r, state) for r, state in read if state is not None]
    if not decided and read:
        shown = [lab_evidence(r, rule=f"{name}: neither positive nor negative") for r, _ in read]
        return "unknown", f"{name} in the last {days} days is indeterminate", shown
    if not decided:
        shown = older_evidence(history, None, days)
        return "unknown", f"{name}: no readable result in the last {days} days", shown
    latest, state = decided[0]
    evidence = [lab_evidence(latest, rule=f"{name} read as {state}")]
    if state == "negative" and spec.confirm_negative_after_days is not None:
        gap = spec.confirm_negative_after_days
        earlier = [
            r
            for r, s in _all_read(spec, history, ctx)
            if s == "negative"
            and latest.effective is not None
            and r.effective is not None
            and r.effective <= latest.effective - timedelta(days=gap)
        ]
        if not earlier:
            return (
                "unknown",
                f"{name} negative on {latest.effective} needs a repeat negative "
                f"at least {gap} days apart",
                evidence,
            )
        evidence.append(
            lab_evidence(earlier[0], rule=f"earlier negative, at least {gap} days before")
        )
        return "negative", f"{name} negative, confirmed by a repeat after {gap} days", evidence
    return state, f"{name} {state} on {latest.effective}", evidence


def _all_read(
    spec: TestSpec, history: list[LabResult], ctx: Context
) -> list[tuple[LabResult, str | None]]:
    return [(r, _read(spec, r, ctx)) for r in history]


def _read(
    spec: TestSpec, result: LabResult, ctx: Context
) -> Literal["positive", "negative"] | None:
    quantity = result.quantity
    if spec.positive == "detectable":
        if result.qualitative is not None:
            return result.qualitative
        if quantity is None:
            return None
        if quantity.comparator in ("<", "<="):
            return "negative"  # below the limit of quantification: not detectable
        return "positive" if quantity.value > 0 else "negative"
    if (
        quantity is not None
        and quantity.canonical_value is not None
        and (spec.positive_at_or_above or spec.negative_below)
    ):
        unit = quantity.canonical_unit or ""
        if spec.positive_at_or_above is not None:
            limit = spec.positive_at_or_above.value * ctx.terms.factor(
                spec.positive_at_or_above.unit, unit
            )
            if compare_bounded(quantity.canonical_value, quantity.comparator, ">=", limit):
                return "positive"
        if spec.negative_below is not None:
            limit = spec.negative_below.value * ctx.terms.factor(spec.negative_below.unit, unit)
            if compare_bounded(quantity.canonical_value, quantity.comparator, "<", limit):
                return "negative"
        return None  # between the two limits: indeterminate
    return result.qualitative


def evaluate_test_results(rule: TestResultsRule, facts: PatientFacts, ctx: Context) -> Verdict:
    """Kleene logic over the tests: fail when a whole group is positive, pass when every
    group has a negative member, unknown otherwise."""
    days = window_days(ctx, rule.lookback_days)
    states: dict[str, TestState] = {}
    reasons: dict[str, str] = {}
    evidence: list[Evidence] = []
    for name, spec in rule.tests.items():
        states[name], reasons[name], shown = test_state(spec, facts, ctx, days)
        evidence += shown
    for group in rule.fail_when:
        if all(states[name] == "positive" for name in group):
            return Verdict("fail", "; ".join(reasons[n] for n in group), tuple(evidence))
    if all(any(states[name] == "negative" for name in group) for group in rule.fail_when):
        return Verdict("pass", "; ".join(reasons.values()), tuple(evidence))
    return Verdict("unknown", "; ".join(reasons.values()), tuple(evidence))
