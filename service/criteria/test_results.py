"""`test_results`: three-valued logic over tests that read positive or negative.

How one result reads (`read_result`):
- quantitative thresholds (hCG) where the spec gives them and the value converts;
- else a qualitative value, coded or in text, or an interpretation code (`LabResult.qualitative`,
  filled by the mapper): a numeric HBsAg index sent with `POS` is positive;
- a titer (1:16, valueRatio) is reactive at any dilution;
- `positive: detectable` (viral loads): a number above zero is detected, zero is not; a value
  below the limit of quantitation ("<20 IU/mL") is NOT "not detected": without a not-detected
  code or text it is indeterminate.

How one test reads over time (`test_state`): the latest readable result in the window decides;
a later one that reads neither way makes it `unknown` (it hides what the test shows now);
results the record cannot order that disagree give `unknown`. With `positive_persists`, a
positive result older than the window still counts (antibodies and HBsAg carriage do not expire
after 90 days), and a later negative after it needs review. With no readable result in the
window, a confirmed active diagnosis in `diagnosis_valueset` reads the test as positive.

`test_state` is also used by `diagnosis_excludes` (positive tests, e.g. hCG for pregnancy).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from service.criteria.common import (
    Context,
    compare_bounded,
    diagnosis_evidence,
    lab_evidence,
    newer_problem,
    newer_problem_reason,
    older_evidence,
    on_day,
    on_or_before,
    review_reason,
    same_instant,
    title,
    unreadable,
    window_days,
)
from service.criteria.model import TestResultsRule, TestSpec
from service.criteria.verdict import Evidence, Verdict
from service.facts import (
    MAYBE_LATER,
    RESOLVED_STATUSES,
    Diagnosis,
    LabResult,
    PatientFacts,
    Quantity,
    written,
)

__all__ = ["TestState", "evaluate_test_results", "read_result", "test_state"]

TestState = Literal["positive", "negative", "unknown"]
Reading = Literal["positive", "negative"]
StateWhy = tuple[TestState, str, list[Evidence]]


def test_state(spec: TestSpec, facts: PatientFacts, ctx: Context, days: int) -> StateWhy:
    """Whether one test reads positive or negative as of `ctx.as_of`, with why."""
    name = title(ctx.terms, spec.lab)
    history = on_or_before(facts.labs_for(spec.lab), ctx.as_of)
    start = ctx.as_of - timedelta(days=days)
    read = [(r, read_result(spec, r, ctx)) for r in history]
    in_window = [(r, s) for r, s in read if r.effective is not None and r.effective >= start]
    decided = [(r, s) for r, s in in_window if s is not None]
    hidden = _newer_unread(spec, name, in_window, decided)
    if hidden is not None:
        return hidden
    if decided:
        return _decided_state(spec, name, facts, ctx, days, decided, read)
    if spec.positive_persists:
        older = next(((r, s) for r, s in read if s == "positive"), None)
        if older is not None:
            result = older[0]
            return (
                "positive",
                f"{name} positive {on_day(result)} (a positive {name} does not expire)",
                [lab_evidence(result, rule=f"{name} read as positive; still counts")],
            )
    if spec.diagnosis_valueset is not None:
        found = _diagnosis_state(spec.diagnosis_valueset, name, facts, ctx, days)
        if found is not None:
            return found
    if in_window and in_window[0][0].status == MAYBE_LATER:
        newest = in_window[0][0]
        shown = [lab_evidence(newest, note=f"may be after {ctx.as_of}; not read")]
        return (
            "unknown",
            f"{name}: the latest result ({newest.reference} {on_day(newest)}) may be after "
            f"{ctx.as_of}",
            shown + older_evidence(history, newest, days),
        )
    if in_window:
        shown = [
            lab_evidence(r, rule=f"{name}: neither positive nor negative") for r, _ in in_window
        ]
        return "unknown", f"{name} in the last {days} days is indeterminate", shown
    shown = older_evidence(history, None, days)
    problem = unreadable(facts, "Observation", concepts=[spec.lab])
    if problem:
        return "unknown", f"{name}: {problem}", shown
    return "unknown", f"{name}: no readable result in the last {days} days", shown


def _decided_state(
    spec: TestSpec,
    name: str,
    facts: PatientFacts,
    ctx: Context,
    days: int,
    decided: list[tuple[LabResult, Reading]],
    read: list[tuple[LabResult, Reading | None]],
) -> StateWhy:
    """The state the latest readable results give, unless an unreadable record may be newer
    (a persisting positive still counts), or a confirmed diagnosis contradicts a negative."""
    state, why, shown = _latest_state(spec, name, decided, read)
    hidden_by = newer_problem(facts, spec.lab, decided[0][0].effective, ctx.as_of)
    if hidden_by is not None and not (state == "positive" and spec.positive_persists):
        return "unknown", newer_problem_reason(name, hidden_by), shown
    if state == "negative" and spec.diagnosis_valueset is not None:
        # A negative result beside a confirmed diagnosis of the infection: one is wrong.
        found = _diagnosis_state(spec.diagnosis_valueset, name, facts, ctx, days)
        if found is not None and found[0] == "positive":
            return "unknown", f"{why}, but {found[1].split(':')[0]}: review", shown + found[2]
        # ... or beside one only its text names (a local code: "慢性乙型肝炎"): review as well
        named = next(
            (
                dx
                for dx in facts.diagnoses
                if spec.diagnosis_valueset in dx.review and _recorded_by(dx, ctx)
                if _active_on(dx, ctx)
            ),
            None,
        )
        if named is not None:
            reason = review_reason(ctx.terms, spec.diagnosis_valueset, named.codes, named.text)
            evidence = diagnosis_evidence(named, note=reason)
            return "unknown", f"{why}, but {reason}", [*shown, evidence]
    return state, why, shown


def _newer_unread(
    spec: TestSpec,
    name: str,
    in_window: list[tuple[LabResult, Reading | None]],
    decided: list[tuple[LabResult, Reading]],
) -> StateWhy | None:
    """A result later than the latest readable one that reads neither way (an index without a
    flag, "equivocal", "see report") hides what the test shows now: `unknown`, never the older
    reading in its place. A positive that does not expire (`positive_persists`) still counts.
    """
    if not decided or not in_window:
        return None
    newest, reading = in_window[0]
    latest, state = decided[0]
    if reading is not None or (newest.status != MAYBE_LATER and same_instant(newest, latest)):
        return None
    if state == "positive" and spec.positive_persists:
        return None
    how = newest.status_phrase if newest.status_unread else "reads neither positive nor negative"
    earlier = written(latest.effective, latest.effective_latest) if latest.effective else None
    return (
        "unknown",
        f"{name}: the latest result ({newest.reference} {on_day(newest)}) {how}; "
        f"the earlier {state} one ({earlier}) no longer decides",
        [
            lab_evidence(newest, rule=f"{name}: neither positive nor negative"),
            lab_evidence(latest, rule=f"{name} read as {state}", note="earlier; not used"),
        ],
    )


def _latest_state(
    spec: TestSpec,
    name: str,
    decided: list[tuple[LabResult, Reading]],
    read: list[tuple[LabResult, Reading | None]],
) -> StateWhy:
    latest, state = decided[0]
    tied = [(r, s) for r, s in decided if same_instant(latest, r)]
    if len({s for _, s in tied}) > 1:
        return (
            "unknown",
            f"{name} results of the same time disagree: "
            + ", ".join(f"{r.reference} {s}" for r, s in tied),
            [lab_evidence(r, rule=f"{name} read as {s}") for r, s in tied],
        )
    evidence = [lab_evidence(latest, rule=f"{name} read as {state}")]
    if state == "negative" and spec.positive_persists:
        earlier = next((r for r, s in read if s == "positive" and _before(r, latest)), None)
        if earlier is not None:
            evidence.append(lab_evidence(earlier, rule=f"earlier {name} read as positive"))
            return (
                "unknown",
                f"{name} negative {on_day(latest)} after a positive {on_day(earlier)}:"
                " review (a positive does not expire)",
                evidence,
            )
    if state == "negative" and spec.confirm_negative_after_days is not None:
        gap = spec.confirm_negative_after_days
        confirmed = next(
            (
                r
                for r, s in read
                if s == "negative"
                and latest.effective is not None
                and r.effective is not None
                and r.effective <= latest.effective - timedelta(days=gap)
            ),
            None,
        )
        if confirmed is None:
            return (
                "unknown",
                f"{name} negative {on_day(latest)} needs a repeat negative "
                f"at least {gap} days apart",
                evidence,
            )
        evidence.append(
            lab_evidence(confirmed, rule=f"earlier negative, at least {gap} days before")
        )
        return "negative", f"{name} negative, confirmed by a repeat after {gap} days", evidence
    return state, f"{name} {state} {on_day(latest)}", evidence


def _before(result: LabResult, than: LabResult) -> bool:
    return (
        result.effective is not None
        and than.effective is not None
        and result.effective < than.effective
    )


def _diagnosis_state(
    valueset: str, name: str, facts: PatientFacts, ctx: Context, days: int
) -> StateWhy | None:
    """A diagnosis that shows the test would read positive (no result in the window).

    Confirmed (or unstated) and active on `as_of` -> positive; provisional, or a status that
    could not be read -> unknown; resolved ones are not counted (the next result decides)."""
    records = [dx for dx in facts.diagnoses_for(valueset) if _recorded_by(dx, ctx)]
    active = [dx for dx in records if _active_on(dx, ctx)]
    confirmed = [
        dx
        for dx in active
        if not (dx.uncertain or dx.status_unread or dx.unsure_on(ctx.as_of, True))
    ]
    label = title(ctx.terms, valueset)
    if confirmed:
        dx = confirmed[0]
        note = f"no {name} result in the last {days} days: read as positive"
        return (
            "positive",
            f"{label} on record ({dx.reference}): {name} read as positive "
            f"(no result in the last {days} days)",
            [diagnosis_evidence(dx, rule=f"{label}: {name} positive", note=note)],
        )
    if active:
        dx = active[0]
        status = dx.unsure_on(ctx.as_of, True) or (
            dx.verification_status if dx.uncertain else f"status {dx.clinical_status}"
        )
        return (
            "unknown",
            f"possible {label} on record ({dx.reference}, {status}); "
            f"no {name} result in the last {days} days",
            [diagnosis_evidence(dx, note=f"{status}: does not decide")],
        )
    return None


def _recorded_by(dx: Diagnosis, ctx: Context) -> bool:
    day = dx.onset or dx.recorded
    return day is None or day <= ctx.as_of


def _active_on(dx: Diagnosis, ctx: Context) -> bool:
    """Active on `as_of`: not resolved by status, and no abatement on or before it (nor one
    sent without a date)."""
    if dx.clinical_status in RESOLVED_STATUSES or (dx.abated and dx.abatement is None):
        return False
    # A partial abatement ("2026-11") that may be after `as_of`: possibly active (`unsure_on`).
    return dx.abatement is None or (dx.abatement_latest or dx.abatement) > ctx.as_of


def read_result(spec: TestSpec, result: LabResult, ctx: Context) -> Reading | None:
    """One result as positive, negative, or None (indeterminate or unreadable)."""
    quantity = result.quantity
    thresholds = (
        spec.positive_at_or_above,
        spec.negative_below,
        spec.positive_below,
        spec.negative_at_or_above,
    )
    if any(thresholds) and quantity is not None and quantity.canonical_value is not None:
        return _by_thresholds(spec, quantity, ctx)  # the protocol's limits, not the lab's flag
    if result.qualitative is not None:
        return result.qualitative  # coded/text value or interpretation code (mapper)
    if spec.positive == "detectable":
        if quantity is None:
            return None
        if quantity.comparator in ("<", "<="):
            return None  # below the limit of quantitation: detected or not, the number cannot say
        return "positive" if quantity.value > 0 else "negative"
    if result.titer is not None and result.titer > 0:
        return "positive"  # reactive at any dilution
    return None


def _by_thresholds(spec: TestSpec, quantity: Quantity, ctx: Context) -> Reading | None:
    assert quantity.canonical_value is not None
    value, unit = quantity.canonical_value, quantity.canonical_unit or ""
    if spec.positive_below is not None:
        limit = spec.positive_below.value * ctx.terms.factor(spec.positive_below.unit, unit)
        if compare_bounded(value, quantity.comparator, "<", limit):
            return "positive"
    if spec.negative_at_or_above is not None:
        amount = spec.negative_at_or_above
        if compare_bounded(
            value, quantity.comparator, ">=", amount.value * ctx.terms.factor(amount.unit, unit)
        ):
            return "negative"
    if spec.positive_at_or_above is not None:
        limit = spec.positive_at_or_above.value * ctx.terms.factor(
            spec.positive_at_or_above.unit, unit
        )
        if compare_bounded(value, quantity.comparator, ">=", limit):
            return "positive"
    if spec.negative_below is not None:
        limit = spec.negative_below.value * ctx.terms.factor(spec.negative_below.unit, unit)
        if compare_bounded(value, quantity.comparator, "<", limit):
            return "negative"
    return None  # between the two limits: indeterminate


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
