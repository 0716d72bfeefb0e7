"""Treatment history: which therapy components the medication record documents.

A component not found is never evidence that the drug was not given (it may have been
given elsewhere), so this rule only ever passes or stays unknown.
"""

from __future__ import annotations

from datetime import date

from service.criteria.common import (
    Context,
    add_months,
    fmt,
    lab_evidence,
    medication_evidence,
    on_or_before,
)
from service.criteria.model import TherapyComponent, TherapyHistoryRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import LabResult, MedicationExposure, PatientFacts


def _interval(med: MedicationExposure, as_of: date) -> tuple[date, date] | None:
    """The days a record covers, cut at `as_of`; an active record with no end runs to it."""
    if med.start is None or med.start > as_of:
        return None
    end = med.end or (as_of if med.status in ("active", "on-hold") else med.start)
    return med.start, min(end, as_of)


def _weight_near(weights: list[LabResult], day: date, within_days: int) -> LabResult | None:
    """The body weight recorded closest to `day`, at most `within_days` away (weights only
    from on or before as_of)."""
    usable = [
        w
        for w in weights
        if w.effective is not None
        and w.quantity
        and w.quantity.canonical_value
        and abs((w.effective - day).days) <= within_days
    ]
    if not usable:
        return None
    return min(usable, key=lambda w: abs((w.effective - day).days))  # type: ignore[operator]


def _dose_component(
    component: TherapyComponent,
    meds: list[MedicationExposure],
    weights: list[LabResult],
    within_days: int,
) -> tuple[bool | None, str, list[Evidence]]:
    assert component.min_prednisone_mg_per_kg_day is not None
    need = component.min_prednisone_mg_per_kg_day
    best: tuple[float, MedicationExposure, LabResult] | None = None
    unreadable: list[MedicationExposure] = []
    for med in meds:
        weight = _weight_near(weights, med.start, within_days) if med.start else None
        if med.daily_dose_mg is None or med.prednisone_factor is None or weight is None:
            unreadable.append(med)
            continue
        assert weight.quantity is not None and weight.quantity.canonical_value is not None
        per_kg = med.daily_dose_mg * med.prednisone_factor / weight.quantity.canonical_value
        if best is None or per_kg > best[0]:
            best = (per_kg, med, weight)
    if best is not None and best[0] >= need:
        per_kg, med, weight = best
        assert weight.quantity is not None and weight.quantity.canonical_value is not None
        rule = (
            f"{fmt(med.daily_dose_mg or 0)} mg/day x {fmt(med.prednisone_factor or 0)} (prednisone "
            f"equivalent) / {fmt(weight.quantity.canonical_value)} kg "
            f"= {fmt(per_kg)} mg/kg/day >= {fmt(need)}"
        )
        return (
            True,
            f"{component.name}: {fmt(per_kg)} mg/kg/day",
            [
                medication_evidence(med, rule=rule),
                lab_evidence(weight, note="input: body weight nearest the start of treatment"),
            ],
        )
    shown = [
        medication_evidence(
            m, note="dose, timing, or a body weight near the start, not recorded in structured form"
        )
        for m in unreadable
    ]
    if best is not None:
        shown.insert(
            0,
            medication_evidence(
                best[1], rule=f"highest documented dose {fmt(best[0])} mg/kg/day < {fmt(need)}"
            ),
        )
    if not meds:
        return None, f"no record of {component.name}", []
    return None, f"{component.name} not documented at the required dose", shown


def _duration_component(
    component: TherapyComponent, meds: list[MedicationExposure], as_of: date
) -> tuple[bool | None, str, list[Evidence]]:
    assert component.duration_months_more_than is not None
    months = component.duration_months_more_than
    spans = sorted(span for med in meds if (span := _interval(med, as_of)) is not None)
    # Consecutive or overlapping courses of drugs in the class count as one treatment.
    merged: list[list[date]] = []
    for start, end in spans:
        if merged and start.toordinal() <= merged[-1][1].toordinal() + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    longest = max(merged, key=lambda s: (s[1] - s[0]).days, default=None)
    if longest is not None and longest[1] > add_months(longest[0], months):
        rule = f"treated {longest[0]} to {longest[1]}: more than {months} months"
        return (
            True,
            f"{component.name}: {longest[0]} to {longest[1]}",
            [medication_evidence(m, rule=rule) for m in meds[:5]],
        )
    if not meds:
        return None, f"no record of {component.name}", []
    note = (
        f"longest documented course {longest[0]} to {longest[1]}" if longest else "no dated course"
    )
    return (
        None,
        f"{component.name}: {note}, not more than {months} months",
        [medication_evidence(m, note=note) for m in meds[:5]],
    )


def evaluate_therapy_history(
    rule: TherapyHistoryRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    weights = on_or_before(facts.labs_for(rule.weight_lab), ctx.as_of)
    found: list[str] = []
    missing: list[str] = []
    evidence: list[Evidence] = []
    for component in rule.components:
        meds = [
            m
            for m in facts.medications_for(component.valueset)
            if m.start is None or m.start <= ctx.as_of
        ]
        if component.min_prednisone_mg_per_kg_day is not None:
            ok, text, shown = _dose_component(component, meds, weights, rule.weight_lookback_days)
        elif component.duration_months_more_than is not None:
            ok, text, shown = _duration_component(component, meds, ctx.as_of)
        else:
            ok = True if meds else None
            text = f"{component.name} documented" if meds else f"no record of {component.name}"
            shown = [medication_evidence(m) for m in meds[:5]]
        (found if ok else missing).append(text)
        evidence += shown
    if not missing:
        return Verdict(
            "pass", "conventional therapy documented: " + "; ".join(found), tuple(evidence)
        )
    return Verdict("unknown", "; ".join(missing), tuple(evidence))
