"""`graded_domains`: the latest grade per domain (BILAG-2004), counted against a requirement."""

from __future__ import annotations

from service.criteria.common import (
    Context,
    first_in_window,
    lab_evidence,
    on_or_before,
    tied_with_first,
    title,
    unreadable,
    window_days,
)
from service.criteria.model import GradedDomainsRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import MAYBE_LATER, PatientFacts

__all__ = ["evaluate_graded_domains"]


def evaluate_graded_domains(rule: GradedDomainsRule, facts: PatientFacts, ctx: Context) -> Verdict:
    days = window_days(ctx, rule.lookback_days)
    grades: dict[str, str] = {}
    conflicting: list[str] = []
    evidence: list[Evidence] = []
    for domain in rule.domains:
        # A grade dated "2026-11" on 5 November (MAYBE_LATER) may be the latest: it is kept,
        # with no grade, so an earlier one does not decide in its place.
        graded = [
            r
            for r in on_or_before(facts.labs_for(domain), ctx.as_of)
            if r.grade or r.status == MAYBE_LATER
        ]
        if first_in_window(graded, ctx.as_of, days) is None:
            continue
        # Grades the record cannot order (same instant, or dates without a time) that differ
        # leave the domain ungraded: neither counts.
        latest = tied_with_first(graded)
        name = title(ctx.terms, domain)
        evidence += [
            lab_evidence(r, rule=f"{name}: grade {r.grade}" if r.grade else None) for r in latest
        ]
        if len({r.grade for r in latest}) > 1:
            conflicting.append(f"{name} ({'/'.join(str(r.grade) for r in latest)})")
        elif latest[0].grade is not None:
            grades[domain] = latest[0].grade
    counts = {grade: sum(1 for g in grades.values() if g == grade) for grade in "ABCDE"}
    summary = (
        ", ".join(f"{counts[g]} {g}" for g in "AB")
        + f" across {len(grades)} of {len(rule.domains)} graded domains"
    )
    for need in rule.pass_if_any:
        if counts.get(need.grade, 0) >= need.at_least:
            return Verdict(
                "pass", f"{summary}: at least {need.at_least} grade {need.grade}", tuple(evidence)
            )
    if len(grades) == len(rule.domains):
        return Verdict("fail", f"{summary}: requirement not met", tuple(evidence))
    missing = [
        title(ctx.terms, d)
        for d in rule.domains
        if d not in grades and not any(c.startswith(title(ctx.terms, d)) for c in conflicting)
    ]
    parts = [summary]
    problem = unreadable(facts, "Observation", concepts=rule.domains) if missing else None
    if problem:
        parts.insert(0, problem)
    if missing:
        parts.append(f"not graded in the last {days} days: {', '.join(missing)}")
    if conflicting:
        parts.append(f"grades of the same time disagree: {', '.join(conflicting)}")
    return Verdict("unknown", "; ".join(parts), tuple(evidence))
