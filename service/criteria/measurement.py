"""`measurement`: the latest result against a fixed limit or a multiple of the ULN.

The latest result on or before `as_of` inside the look-back window decides; with none, the
verdict is `unknown` and older results are shown. Options: a value derived as a product of
other results (ANC = WBC x neutrophil %), results invalidated by a recent medication (G-CSF),
a limit raised by a diagnosis (Gilbert's syndrome).
"""

from __future__ import annotations

from datetime import date, timedelta

from service.criteria.common import (
    Context,
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
    usable,
    window_days,
)
from service.criteria.model import MeasurementRule
from service.criteria.verdict import Evidence, Verdict, VerdictValue
from service.facts import LabResult, PatientFacts

__all__ = ["evaluate_measurement"]


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
    days = window_days(ctx, rule.lookback_days)
    history = on_or_before(facts.labs_for(rule.lab), ctx.as_of)
    result = first_in_window(usable(history), ctx.as_of, days)
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
        for result in usable(on_or_before(facts.labs_for(concept), ctx.as_of)):
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
