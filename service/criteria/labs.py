"""Rules read from results: thresholds, x ULN, creatinine clearance, graded domains, tests.

Every rule here follows one policy: the latest result on or before `as_of` inside the
look-back window decides; with none, the verdict is `unknown` and older results are shown.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from service.criteria.common import (
    Context,
    age_range,
    compare,
    compare_bounded,
    diagnosis_evidence,
    first_in_window,
    fmt,
    lab_evidence,
    medication_evidence,
    older_evidence,
    on_or_before,
    title,
    unreadable,
)
from service.criteria.model import (
    CreatinineClearanceRule,
    GradedDomainsRule,
    MeasurementRule,
    TestResultsRule,
    TestSpec,
)
from service.criteria.verdict import Evidence, Verdict, VerdictValue
from service.facts import LabResult, PatientFacts
from service.units import UnitError

TestState = Literal["positive", "negative", "unknown"]


def _window(ctx: Context, days: int | None) -> int:
    return days if days is not None else ctx.default_lookback_days


def _usable(results: list[LabResult]) -> list[LabResult]:
    return [r for r in results if r.quantity is not None and r.quantity.canonical_value is not None]


def _no_result(ctx: Context, concept: str, days: int, history: list[LabResult]) -> Verdict:
    unconvertible = [
        r for r in history if r.quantity is not None and r.quantity.canonical_value is None
    ]
    reason = f"no {title(ctx.terms, concept)} result in the {days} days before {ctx.as_of}"
    if unconvertible:
        unit = unconvertible[0].quantity.unit if unconvertible[0].quantity else None
        reason += f" that could be read (unit {unit!r} cannot be converted)"
    notes = older_evidence(history, None, days)
    return Verdict("unknown", reason, tuple(notes))


def evaluate_measurement(rule: MeasurementRule, facts: PatientFacts, ctx: Context) -> Verdict:
    days = _window(ctx, rule.lookback_days)
    history = on_or_before(facts.labs_for(rule.lab), ctx.as_of)
    result = first_in_window(_usable(history), ctx.as_of, days)
    evidence: list[Evidence] = []
    # A newer result whose unit cannot be converted hides what the latest value is: it is
    # shown, and an older readable result does not decide in its place.
    newest = first_in_window([r for r in history if r.quantity], ctx.as_of, days)
    if newest is not None and (
        result is None or (newest.effective or ctx.as_of) > (result.effective or ctx.as_of)
    ):
        unit = newest.quantity.unit if newest.quantity else None
        return Verdict(
            "unknown",
            f"the latest {title(ctx.terms, rule.lab)} result ({newest.reference} on "
            f"{newest.effective}) has unit {unit!r}, which cannot be converted",
            (
                lab_evidence(newest, note="unit cannot be converted; not compared"),
                *older_evidence(history, newest, days),
            ),
        )
    if result is None and rule.derive_product is not None:
        derived = _derive_product(rule, facts, ctx, days)
        if derived is not None:
            value, day, inputs = derived
            return _judge(rule, facts, ctx, value, None, day, inputs, days, history)
    if result is None:
        return _no_result(ctx, rule.lab, days, history)
    assert result.quantity is not None and result.quantity.canonical_value is not None
    evidence = older_evidence(history, result, days)
    return _judge(
        rule,
        facts,
        ctx,
        result.quantity.canonical_value,
        result,
        result.effective,
        [],
        days,
        history,
        evidence,
    )


def _judge(
    rule: MeasurementRule,
    facts: PatientFacts,
    ctx: Context,
    value: float,
    result: LabResult | None,
    day: date | None,
    inputs: list[LabResult],
    days: int,
    history: list[LabResult],
    older: list[Evidence] | None = None,
) -> Verdict:
    info = ctx.terms.valuesets[rule.lab]
    unit = info.canonical_unit or ""
    name = info.title
    extra: list[Evidence] = []
    # The limit: fixed, or a multiple of the upper limit of normal.
    if rule.value is not None and rule.unit is not None:
        limit = rule.value * ctx.terms.factor(rule.unit, unit, info.molar_mass)
        limit_text = f"{fmt(limit)} {unit}"
    else:
        assert rule.uln_multiple is not None and rule.default_uln is not None
        multiple = rule.uln_multiple
        raised = rule.raised_limit_if_diagnosis
        if raised is not None:
            reasons = [
                dx
                for dx in facts.diagnoses_for(raised.valueset)
                if dx.verification_status not in ("unconfirmed", "provisional", "differential")
                and (dx.onset is None or dx.onset <= ctx.as_of)
            ]
            if reasons:
                multiple = raised.uln_multiple
                extra.append(
                    diagnosis_evidence(
                        reasons[0], note=f"raises the limit to {fmt(multiple)} x ULN"
                    )
                )
        own = result.ref_high if result is not None else None
        if own is not None and own.canonical_value is not None:
            uln, uln_source = own.canonical_value, "the lab's reference range"
        else:
            uln = rule.default_uln.value * ctx.terms.factor(
                rule.default_uln.unit, unit, info.molar_mass
            )
            uln_source = "the trial's default ULN (no reference range sent)"
        limit = multiple * uln
        limit_text = (
            f"{fmt(multiple)} x ULN {fmt(uln)} = {fmt(limit)} {unit} (ULN from {uln_source})"
        )
    comparator = result.quantity.comparator if result is not None and result.quantity else None
    outcome = compare_bounded(value, comparator, rule.op, limit)
    shown = f"{comparator or ''}{fmt(value)} {unit}"
    test = f"{name} {shown} {rule.op} {limit_text}"
    if result is not None:
        evidence = [lab_evidence(result, rule=test)]
    else:
        evidence = [
            Evidence(
                reference=None,
                value=round(value, 4),
                unit=unit,
                converted_value=round(value, 4),
                converted_unit=unit,
                date=day,
                rule=test,
                note=f"derived: product of {', '.join(i.reference for i in inputs)}",
                inputs=tuple(i.reference for i in inputs),
            ),
            *(lab_evidence(i, note="input to the derived value") for i in inputs),
        ]
    evidence += extra + (older or [])
    # A count drawn too soon after a growth factor does not reflect the marrow.
    invalid = rule.invalid_after_medication
    if invalid is not None and day is not None:
        for med in facts.medications_for(invalid.valueset):
            if med.start is None or med.start > day:
                continue
            last = med.end or med.start
            if last >= day - timedelta(days=invalid.within_days_before):
                evidence.append(
                    medication_evidence(
                        med, note=f"within {invalid.within_days_before} days before the test"
                    )
                )
                return Verdict(
                    "unknown",
                    f"{name} on {day} was drawn within {invalid.within_days_before} days of "
                    f"{title(ctx.terms, invalid.valueset)} ({med.reference}); repeat the test",
                    tuple(evidence),
                )
    if outcome is None:
        return Verdict("unknown", f"{test}: the reported bound cannot decide", tuple(evidence))
    # Records that could change the verdict but could not be read withhold it.
    if outcome and invalid is not None:
        problem = unreadable(
            facts, "MedicationStatement", "MedicationRequest", concepts=[invalid.valueset]
        )
        if problem:
            return Verdict(
                "unknown", f"{test}, but {problem} (G-CSF cannot be ruled out)", tuple(evidence)
            )
    if not outcome and rule.raised_limit_if_diagnosis is not None and not extra:
        problem = unreadable(facts, "Condition", concepts=[rule.raised_limit_if_diagnosis.valueset])
        if problem:
            return Verdict(
                "unknown",
                f"{test}, but {problem} (a raised limit cannot be ruled out)",
                tuple(evidence),
            )
    verdict: VerdictValue = "pass" if outcome else "fail"
    return Verdict(verdict, f"{test} on {day}: {'met' if outcome else 'not met'}", tuple(evidence))


def _derive_product(
    rule: MeasurementRule, facts: PatientFacts, ctx: Context, days: int
) -> tuple[float, date, list[LabResult]] | None:
    """The latest day on which every input has a usable result, and their product."""
    spec = rule.derive_product
    assert spec is not None
    start = ctx.as_of - timedelta(days=days)
    per_lab: list[dict[date, LabResult]] = []
    for concept in spec.labs:
        by_day: dict[date, LabResult] = {}
        for result in _usable(on_or_before(facts.labs_for(concept), ctx.as_of)):
            if result.effective is not None and result.effective >= start:
                by_day.setdefault(result.effective, result)  # newest first: keep the first
        per_lab.append(by_day)
    common = set(per_lab[0]).intersection(*per_lab[1:])
    if not common:
        return None
    day = max(common)
    inputs = [by_day[day] for by_day in per_lab]
    value = spec.scale
    for item in inputs:
        assert item.quantity is not None and item.quantity.canonical_value is not None
        value *= item.quantity.canonical_value
    return value, day, inputs


def evaluate_creatinine_clearance(
    rule: CreatinineClearanceRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    days = _window(ctx, rule.lookback_days)
    measured_history = on_or_before(facts.labs_for(rule.measured_lab), ctx.as_of)
    measured = first_in_window(_usable(measured_history), ctx.as_of, days)
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
    creatinine = first_in_window(_usable(creatinine_history), ctx.as_of, days)
    weight_history = on_or_before(facts.labs_for(rule.weight_lab), ctx.as_of)
    weight = first_in_window(_usable(weight_history), ctx.as_of, rule.weight_lookback_days)
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


def evaluate_graded_domains(rule: GradedDomainsRule, facts: PatientFacts, ctx: Context) -> Verdict:
    days = _window(ctx, rule.lookback_days)
    grades: dict[str, str] = {}
    evidence: list[Evidence] = []
    for domain in rule.domains:
        graded = [r for r in on_or_before(facts.labs_for(domain), ctx.as_of) if r.grade]
        latest = first_in_window(graded, ctx.as_of, days)
        if latest is not None and latest.grade is not None:
            grades[domain] = latest.grade
            evidence.append(
                lab_evidence(latest, rule=f"{title(ctx.terms, domain)}: grade {latest.grade}")
            )
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
    missing = [title(ctx.terms, d) for d in rule.domains if d not in grades]
    return Verdict(
        "unknown",
        f"{summary}; not graded in the last {days} days: {', '.join(missing)}",
        tuple(evidence),
    )


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
    days = _window(ctx, rule.lookback_days)
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
