"""`creatinine_clearance`: Cockcroft-Gault from the most recent creatinine.

The protocol asks for a clearance "calculated by Cockcroft-Gault", so:
- the formula on the most recent creatinine in the window decides (serum/plasma results are
  preferred over whole blood at the same instant: the formula was derived on serum), with the
  body weight recorded nearest that creatinine (within `weight_lookback_days` of it);
- a Cockcroft-Gault value the lab calculated (`reported_lab`) counts too, but only if it is not
  older than that creatinine; when both count and disagree, `unknown` names both;
- a measured (24-hour urine) clearance is shown as evidence and never decides.
"""

from __future__ import annotations

from datetime import date

from service.criteria.common import (
    NO_BIRTH_DATE,
    Context,
    age_missing,
    age_range,
    compare,
    compare_bounded,
    first_in_window,
    fmt,
    instant,
    lab_evidence,
    newer_unreadable,
    older_evidence,
    on_day,
    on_or_before,
    prefer,
    tied_with_first,
    title,
    unreadable,
    unreadable_reason,
    usable,
    window_days,
)
from service.criteria.model import CreatinineClearanceRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import LabResult, PatientFacts
from service.units import UnitError

__all__ = ["evaluate_creatinine_clearance"]


def evaluate_creatinine_clearance(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    days = window_days(ctx, rule.lookback_days)
    history = on_or_before(facts.labs_for(rule.creatinine_lab), ctx.as_of)
    readable = usable(history)
    hidden = newer_unreadable(history, readable, ctx.as_of, days) if readable else None
    if hidden is not None:
        # The latest creatinine cannot be read: an older one does not stand in for it.
        return Verdict(
            "unknown",
            unreadable_reason(title(ctx.terms, rule.creatinine_lab), hidden, ctx.as_of),
            (lab_evidence(hidden, note="not compared"), *older_evidence(history, hidden, days)),
        )
    latest = tied_with_first(readable) if first_in_window(readable, ctx.as_of, days) else []
    creatinines = prefer(latest, rule.serum_creatinine_lab)
    shown = _measured_evidence(rule, facts, ctx, days)
    reported, reported_note = _reported(rule, facts, ctx, days, creatinines)
    shown += reported_note
    verdicts: list[Verdict] = []
    missing: list[str] = []
    for creatinine in creatinines:
        computed = _cockcroft_gault(rule, facts, ctx, creatinine)
        if isinstance(computed, Verdict):
            verdicts.append(computed)
        else:
            missing = computed
    if reported is not None:
        verdicts.append(_judge_reported(rule, ctx, reported))
    if not verdicts:
        if not creatinines:
            missing = [f"serum creatinine in the last {days} days", *missing]
        older = older_evidence(history, None, days)
        reason = "Cockcroft-Gault needs " + ", ".join(missing)
        problem = unreadable(facts, "Observation", concepts=_labs(rule))
        if problem:
            reason = f"{problem}: {reason}"
        return Verdict("unknown", reason, tuple(older + shown))
    evidence = tuple(e for v in verdicts for e in v.evidence) + tuple(shown)
    if len({v.verdict for v in verdicts}) > 1:
        return Verdict(
            "unknown",
            "clearances of the same time disagree: "
            + "; ".join(f"{v.reason} ({v.verdict})" for v in verdicts),
            evidence,
        )
    return Verdict(verdicts[0].verdict, "; ".join(v.reason for v in verdicts), evidence)


def _measured_evidence(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context, days: int
) -> list[Evidence]:
    """The latest measured clearance in the window: shown, never deciding."""
    measured = [
        r
        for r in usable(on_or_before(facts.labs_for(rule.measured_lab), ctx.as_of))
        if rule.reported_lab is None or rule.reported_lab not in r.concepts
    ]
    latest = first_in_window(measured, ctx.as_of, days)
    if latest is None:
        return []
    note = "measured clearance: shown; the protocol asks for Cockcroft-Gault, so it does not decide"
    return [lab_evidence(latest, note=note)]


def _reported(
    rule: CreatinineClearanceRule,
    facts: PatientFacts,
    ctx: Context,
    days: int,
    creatinines: list[LabResult],
) -> tuple[LabResult | None, list[Evidence]]:
    """The lab's own Cockcroft-Gault value, if it is not older than the latest creatinine."""
    if rule.reported_lab is None:
        return None, []
    found = usable(on_or_before(facts.labs_for(rule.reported_lab), ctx.as_of))
    latest = first_in_window(found, ctx.as_of, days)
    if latest is None:
        return None, []
    if creatinines and _older(latest, creatinines[0]):
        note = (
            f"older than the latest creatinine ({creatinines[0].reference} on "
            f"{creatinines[0].effective}); not used"
        )
        return None, [lab_evidence(latest, note=note)]
    return latest, []


def _older(result: LabResult, than: LabResult) -> bool:
    """Whether `result` is known to precede `than` (by date, then by timestamp)."""
    if result.effective != than.effective:
        return (result.effective or date.min) < (than.effective or date.min)
    at, at_than = instant(result), instant(than)
    return at is not None and at_than is not None and at < at_than


def _judge_reported(rule: CreatinineClearanceRule, ctx: Context, reported: LabResult) -> Verdict:
    quantity = reported.quantity
    assert quantity is not None and quantity.canonical_value is not None
    limit = rule.value * ctx.terms.factor(rule.unit, quantity.canonical_unit or rule.unit)
    test = (
        f"creatinine clearance {quantity.comparator or ''}{fmt(quantity.canonical_value)} mL/min "
        f"{rule.op} {fmt(limit)} mL/min (Cockcroft-Gault calculated by the lab)"
    )
    evidence = (lab_evidence(reported, rule=test),)
    # A reported bound ("<60", ">90") decides only if every value it allows agrees.
    outcome = compare_bounded(quantity.canonical_value, quantity.comparator, rule.op, limit)
    if outcome is None:
        return Verdict("unknown", f"{test}: the reported bound cannot decide", evidence)
    return Verdict("pass" if outcome else "fail", f"{test} {on_day(reported)}", evidence)


def _weight_near(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context, creatinine: LabResult
) -> LabResult | None:
    """The body weight recorded nearest the creatinine, within `weight_lookback_days` of it
    (before or after, up to `as_of`); at equal distance the later one."""
    assert creatinine.effective is not None
    day = creatinine.effective
    weights = [
        (abs((w.effective - day).days), w)
        for w in usable(on_or_before(facts.labs_for(rule.weight_lab), ctx.as_of))
        if w.effective is not None and abs((w.effective - day).days) <= rule.weight_lookback_days
    ]
    if not weights:
        return None
    return min(weights, key=lambda pair: pair[0])[1]  # newest first: the later wins a tie


def _cockcroft_gault(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context, creatinine: LabResult
) -> Verdict | list[str]:
    """The formula's verdict on one creatinine, or what it is missing."""
    weight = _weight_near(rule, facts, ctx, creatinine)
    ages = age_range(facts.demographics, ctx.as_of)
    missing = []
    if weight is None:
        missing.append(
            f"body weight within {rule.weight_lookback_days} days of the creatinine "
            f"({creatinine.reference} {on_day(creatinine)})"
        )
    if ages is None:
        why = age_missing(facts.demographics, ctx.as_of)
        missing.append("date of birth" if why == NO_BIRTH_DATE else f"an age ({why})")
    if weight is None or ages is None:
        return missing
    assert creatinine.quantity is not None and creatinine.quantity.canonical_value is not None
    assert weight.quantity is not None and weight.quantity.canonical_value is not None
    info = ctx.terms.valuesets[rule.creatinine_lab]
    try:
        mg_dl = creatinine.quantity.canonical_value * ctx.terms.factor(
            info.canonical_unit or "umol/L", "mg/dL", info.molar_mass
        )
    except UnitError:
        return Verdict(
            "unknown",
            "creatinine cannot be converted to mg/dL for Cockcroft-Gault",
            (lab_evidence(creatinine),),
        )
    kg = weight.quantity.canonical_value
    age = ages[1]  # the older possible age gives the lower (stricter) clearance
    sex = facts.demographics.sex if facts.demographics else None
    factors = {"female": [0.85], "male": [1.0]}.get(sex or "", [0.85, 1.0])
    values = [(140 - age) * kg * factor / (72 * mg_dl) for factor in factors]
    outcomes = {compare(value, rule.op, rule.value) for value in values}
    formula = " / ".join(
        f"(140 - {age}) x {fmt(kg)} kg{' x 0.85' if f == 0.85 else ''} "
        f"/ (72 x {fmt(mg_dl)} mg/dL) = {fmt(v)} mL/min"
        for f, v in zip(factors, values, strict=True)
    )
    test = f"{formula} {rule.op} {fmt(rule.value)} {rule.unit}"
    evidence = (
        Evidence(
            reference=None,
            value=round(min(values), 1),
            unit="mL/min",
            converted_value=round(min(values), 1),
            converted_unit="mL/min",
            date=creatinine.effective,
            rule=test,
            note="derived: Cockcroft-Gault"
            + ("" if len(factors) == 1 else " (sex not recorded: both formulas)"),
            inputs=(creatinine.reference, weight.reference, facts.reference),
        ),
        lab_evidence(creatinine, note="input: serum creatinine"),
        lab_evidence(weight, note="input: body weight (nearest the creatinine)"),
        Evidence(
            reference=facts.reference,
            value=age,
            unit="a",
            date=ctx.as_of,
            note="input: age at as_of",
        ),
    )
    if len(outcomes) > 1:
        return Verdict(
            "unknown",
            f"sex not recorded and the two Cockcroft-Gault results disagree: {test}",
            evidence,
        )
    outcome = outcomes.pop()
    return Verdict(
        "pass" if outcome else "fail", f"{test}: {'met' if outcome else 'not met'}", evidence
    )


def _labs(rule: CreatinineClearanceRule) -> list[str]:
    """The value sets the rule reads, for naming an unreadable record or a failed search."""
    return [
        lab
        for lab in (
            rule.creatinine_lab,
            rule.serum_creatinine_lab,
            rule.measured_lab,
            rule.reported_lab,
            rule.weight_lab,
        )
        if lab
    ]
