"""`creatinine_clearance`: a clearance in mL/min, measured, reported or by Cockcroft-Gault."""

from __future__ import annotations

from service.criteria.common import (
    Context,
    age_range,
    compare,
    compare_bounded,
    first_in_window,
    fmt,
    lab_evidence,
    older_evidence,
    on_or_before,
    usable,
    window_days,
)
from service.criteria.model import CreatinineClearanceRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import PatientFacts
from service.units import UnitError

__all__ = ["evaluate_creatinine_clearance"]


def evaluate_creatinine_clearance(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    days = window_days(ctx, rule.lookback_days)
    measured_history = on_or_before(facts.labs_for(rule.measured_lab), ctx.as_of)
    measured = first_in_window(usable(measured_history), ctx.as_of, days)
    if measured is not None:
        assert measured.quantity is not None and measured.quantity.canonical_value is not None
        limit = rule.value * ctx.terms.factor(
            rule.unit, measured.quantity.canonical_unit or rule.unit
        )
        value = measured.quantity.canonical_value
        comparator = measured.quantity.comparator
        test = (
            f"creatinine clearance {comparator or ''}{fmt(value)} mL/min {rule.op} "
            f"{fmt(limit)} mL/min (measured/reported)"
        )
        # A reported bound ("<60", ">90") decides only if every value it allows agrees.
        outcome = compare_bounded(value, comparator, rule.op, limit)
        if outcome is None:
            return Verdict(
                "unknown",
                f"{test}: the reported bound cannot decide",
                (lab_evidence(measured, rule=test),),
            )
        return Verdict(
            "pass" if outcome else "fail",
            f"{test} on {measured.effective}",
            (lab_evidence(measured, rule=test),),
        )

    creatinine_history = on_or_before(facts.labs_for(rule.creatinine_lab), ctx.as_of)
    creatinine = first_in_window(usable(creatinine_history), ctx.as_of, days)
    weight_history = on_or_before(facts.labs_for(rule.weight_lab), ctx.as_of)
    weight = first_in_window(usable(weight_history), ctx.as_of, rule.weight_lookback_days)
    ages = age_range(facts.demographics, ctx.as_of)
    missing = []
    if creatinine is None:
        missing.append(f"serum creatinine in the last {days} days")
    if weight is None:
        missing.append(f"body weight in the last {rule.weight_lookback_days} days")
    if ages is None:
        missing.append("date of birth")
    if creatinine is None or weight is None or ages is None:
        shown = older_evidence(creatinine_history, None, days) + older_evidence(
            weight_history, None, rule.weight_lookback_days
        )
        return Verdict("unknown", "Cockcroft-Gault needs " + ", ".join(missing), tuple(shown))
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
        lab_evidence(weight, note="input: body weight"),
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
