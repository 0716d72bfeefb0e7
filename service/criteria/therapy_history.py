"""Treatment history (`therapy_history`): which therapy components the medication record
documents.

A component not found is never evidence that the drug was not given (it may have been
given elsewhere), so this rule only ever passes or stays unknown. The policies:
- **Which days a record covers**: `criteria/exposure.py`, as for every rule, cut at `as_of`.
- **Dose** (`min_prednisone_mg_per_kg_day`): prednisone-equivalent mg per day (the record's
  mg, or tablets x the clinical drug's strength, x terminology/glucocorticoid_equivalents.csv)
  divided by the body weight nearest the start of that treatment. Administrations of one day
  are summed (a 500 mg dose given as two 250 mg infusions is 500 mg that day).
- **Pulses** (`pulse_max_days`, `pulse_min_prednisone_mg`): a glucocorticoid course of at most
  `pulse_max_days` consecutive days, given intravenously (route) or at
  `pulse_min_prednisone_mg` or more a day, is a pulse. It is shown and flagged "pulse" but
  does not establish >= N mg/kg/day therapy on its own; a course longer than that counts.
- **Courses** (`course_gap_days`, N): infusions are recorded as single-day administrations
  (rituximab, belimumab, IV cyclophosphamide). Single-day records no more than N days apart
  form one course, from the first to the last plus the interval: each dose counts for N days,
  its own included, so a dose N days after the previous continues the course and one N+1
  days after starts a new one. Courses and longer records that overlap or follow each other
  day to day are one treatment (a switch from one listed drug to another does not restart
  the count).
- **Unmapped is not absent**: a medication no value set knows by code but whose text matches
  the component's review terms never satisfies it; it is cited: "possible <name>: review". So
  is a record whose drug is unknown (it names a Medication that could not be read:
  `unidentified`), for every component it leaves open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from service.criteria.common import (
    Context,
    add_months,
    and_more,
    fmt,
    lab_evidence,
    medication_evidence,
    on_or_before,
    unidentified,
    unidentified_reason,
)
from service.criteria.exposure import exposure
from service.criteria.model import TherapyComponent, TherapyHistoryRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import LabResult, MedicationExposure, PatientFacts, written
from service.terminology import Terminology

Outcome = tuple[bool | None, str, list[Evidence]]
# Route words that mean intravenous: SNOMED CT 47625008, NCI C38276, EDQM 20045000, text.
INTRAVENOUS = ("intravenous", "47625008", "c38276", "20045000", "静脉", "静滴", "静注")
IV_ABBREVIATIONS = frozenset({"iv", "i.v.", "ivgtt", "ivp", "ivpb"})


@dataclass(frozen=True, slots=True)
class _Dose:
    """Glucocorticoid given over `start`..`end`: one record, or a day's administrations."""

    meds: tuple[MedicationExposure, ...]
    start: date
    end: date
    prednisone_mg_day: float | None
    intravenous: bool


def is_intravenous(route: str | None) -> bool:
    """Whether a route (display, code or text as recorded) says intravenous."""
    if not route:
        return False
    folded = route.casefold().strip()
    return folded in IV_ABBREVIATIONS or any(word in folded for word in INTRAVENOUS)


def _prednisone_mg_day(med: MedicationExposure) -> float | None:
    if med.daily_dose_mg is None or med.prednisone_factor is None:
        return None
    return med.daily_dose_mg * med.prednisone_factor


def _doses(meds: list[MedicationExposure], as_of: date, terms: Terminology) -> list[_Dose]:
    """Each dated record as a dose, with the administrations of one day taken together."""
    doses: list[_Dose] = []
    by_day: dict[date, list[MedicationExposure]] = defaultdict(list)
    for med in meds:
        span = exposure(med, as_of, terms, documented=True)
        if span is None:
            continue
        if med.resource_type == "MedicationAdministration" and span.start == span.end:
            by_day[span.start].append(med)
            continue
        mg = _prednisone_mg_day(med)
        doses.append(_Dose((med,), span.start, span.end, mg, is_intravenous(med.route)))
    for day, given in by_day.items():
        known = [mg for m in given if (mg := _prednisone_mg_day(m)) is not None]
        iv = any(is_intravenous(m.route) for m in given)
        doses.append(_Dose(tuple(given), day, day, sum(known) if known else None, iv))
    return sorted(doses, key=lambda d: (d.start, d.end, d.meds[0].reference))


def _pulses(component: TherapyComponent, doses: list[_Dose]) -> set[int]:
    """Indexes (in `doses`) of doses that are part of a pulse: runs of consecutive days of IV
    or very high doses lasting at most `pulse_max_days`."""
    if component.pulse_max_days is None:
        return set()
    high = component.pulse_min_prednisone_mg

    def candidate(dose: _Dose) -> bool:
        mg = dose.prednisone_mg_day
        return dose.intravenous or (high is not None and mg is not None and mg >= high)

    runs: list[list[int]] = []
    run_end: date | None = None
    for index, dose in enumerate(doses):
        if not candidate(dose):
            continue
        if runs and run_end is not None and dose.start <= run_end + timedelta(days=1):
            runs[-1].append(index)
            run_end = max(run_end, dose.end)
        else:
            runs.append([index])
            run_end = dose.end
    pulses: set[int] = set()
    for run in runs:
        first, last = doses[run[0]].start, max(doses[i].end for i in run)
        if (last - first).days + 1 <= component.pulse_max_days:
            pulses.update(run)
    return pulses


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


def _dose_evidence(dose: _Dose, rule: str | None = None, note: str | None = None) -> list[Evidence]:
    return [medication_evidence(m, rule=rule, note=note) for m in dose.meds]


def _dose_component(
    component: TherapyComponent,
    meds: list[MedicationExposure],
    weights: list[LabResult],
    within_days: int,
    ctx: Context,
) -> Outcome:
    assert component.min_prednisone_mg_per_kg_day is not None
    need = component.min_prednisone_mg_per_kg_day
    doses = _doses(meds, ctx.as_of, ctx.terms)
    pulses = _pulses(component, doses)
    best: tuple[float, _Dose, LabResult] | None = None
    unreadable: list[_Dose] = []
    for index, dose in enumerate(doses):
        if index in pulses:
            continue
        weight = _weight_near(weights, dose.start, within_days)
        if dose.prednisone_mg_day is None or weight is None:
            unreadable.append(dose)
            continue
        assert weight.quantity is not None and weight.quantity.canonical_value is not None
        per_kg = dose.prednisone_mg_day / weight.quantity.canonical_value
        if best is None or per_kg > best[0]:
            best = (per_kg, dose, weight)
    pulse_evidence = [
        e
        for i in sorted(pulses)
        for e in _dose_evidence(
            doses[i],
            note=f"pulse (IV or high dose, at most {component.pulse_max_days} days): "
            "shown, not counted toward the daily dose",
        )
    ]
    if best is not None and best[0] >= need:
        per_kg, dose, weight = best
        assert weight.quantity is not None and weight.quantity.canonical_value is not None
        rule = (
            f"{fmt(dose.prednisone_mg_day or 0)} mg/day prednisone equivalent "
            f"/ {fmt(weight.quantity.canonical_value)} kg = {fmt(per_kg)} mg/kg/day >= {fmt(need)}"
        )
        if len(dose.meds) == 1 and dose.meds[0].daily_dose_mg is not None:
            med = dose.meds[0]
            rule = (
                f"{fmt(med.daily_dose_mg or 0)} mg/day x {fmt(med.prednisone_factor or 0)} "
                f"(prednisone equivalent) / {fmt(weight.quantity.canonical_value)} kg "
                f"= {fmt(per_kg)} mg/kg/day >= {fmt(need)}"
            )
        return (
            True,
            f"{component.name}: {fmt(per_kg)} mg/kg/day",
            [
                *_dose_evidence(dose, rule=rule),
                lab_evidence(weight, note="input: body weight nearest the start of treatment"),
                *pulse_evidence,
            ],
        )
    shown = [
        e
        for d in unreadable
        for e in _dose_evidence(
            d, note="dose, timing, or a body weight near the start, not recorded in structured form"
        )
    ]
    shown += [medication_evidence(m, note="no date recorded") for m in meds if m.start is None]
    if best is not None:
        rule = f"highest documented dose {fmt(best[0])} mg/kg/day < {fmt(need)}"
        shown[:0] = _dose_evidence(best[1], rule=rule)
    shown += pulse_evidence
    if not meds:
        return None, f"no record of {component.name}", []
    if pulses and best is None and not unreadable:
        return (
            None,
            f"{component.name}: only a glucocorticoid pulse documented (not counted)",
            shown,
        )
    return None, f"{component.name} not documented at the required dose", shown


def _courses(
    component: TherapyComponent, meds: list[MedicationExposure], ctx: Context
) -> list[tuple[date, date]]:
    """The treatment periods of a component, merged as the module docstring says."""
    spans: list[tuple[date, date]] = []
    gap = component.course_gap_days
    for med in meds:
        span = exposure(med, ctx.as_of, ctx.terms, documented=True)
        if span is None:
            continue
        end = span.end
        if gap is not None and span.start == span.end:
            # A dose acts for `gap` days, its own included: the next one up to `gap` days
            # later continues the course (the merge below joins them), one later does not.
            end = max(min(span.start + timedelta(days=gap - 1), ctx.as_of), span.start)
        spans.append((span.start, end))
    merged: list[list[date]] = []
    for start, end in sorted(spans):
        if merged and start.toordinal() <= merged[-1][1].toordinal() + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _duration_component(
    component: TherapyComponent, meds: list[MedicationExposure], ctx: Context
) -> Outcome:
    assert component.duration_months_more_than is not None
    months = component.duration_months_more_than
    courses = _courses(component, meds, ctx)
    longest = max(courses, key=lambda s: (s[1] - s[0]).days, default=None)
    how = (
        f" (single-day doses no more than {component.course_gap_days} days apart are one "
        f"course; each dose counts for {component.course_gap_days} days)"
        if component.course_gap_days
        else ""
    )
    shown = _as_written(meds)
    if longest is not None and longest[1] > add_months(longest[0], months):
        treated = f"{shown(longest[0])} to {shown(longest[1])}"
        rule = f"treated {treated}: more than {months} months{how}"
        inside = [
            m
            for m in meds
            if m.start is not None and longest[0] <= (m.start_latest or m.start) <= longest[1]
        ]
        return (
            True,
            f"{component.name}: {treated}",
            [medication_evidence(m, rule=rule) for m in inside[:5]],
        )
    if not meds:
        return None, f"no record of {component.name}", []
    note = (
        f"longest documented course {shown(longest[0])} to {shown(longest[1])}"
        if longest
        else "no dated course"
    )
    return (
        None,
        f"{component.name}: {note}, not more than {months} months",
        [medication_evidence(m, note=note + how) for m in meds[:5]],
    )


def _as_written(meds: list[MedicationExposure]) -> Callable[[date], str]:
    """How to show a course's first or last day: a day that is a partial date's surely
    covered bound (the last day of a start "2025-03", the first of an end "2025-11") as the
    date was written, any other as the day."""
    partial = {
        bound: written(first, last)
        for m in meds
        for bound, first, last in (
            (m.start_latest, m.start, m.start_latest),
            (m.end, m.end, m.end_latest),
        )
        if bound is not None and first is not None and last is not None
    }
    if not partial:
        return str  # full dates: most records
    return lambda day: partial.get(day, str(day))


def _review_note(
    component: TherapyComponent, facts: PatientFacts, as_of: date, terms: Terminology
) -> tuple[str, list[Evidence]]:
    """Records no value set knows whose text suggests the component, and records whose drug
    is unknown: never counted, cited."""
    began = [m for m in facts.medications if m.start is None or m.start <= as_of]
    possible = [m for m in began if component.valueset in m.review]
    unknown = [m for m in began if unidentified(m)]
    text = ""
    cited: list[Evidence] = []
    if possible:
        first = possible[0]
        code = first.codes[0] if first.codes else None
        where = f" ({code.system} {code.code}, not in the value set)" if code else " (no code)"
        text = f"; possible {component.name}: '{first.text}'{where}: review"
        note = "text suggests this drug; its code is not in the value set: review, not counted"
        cited = [medication_evidence(m, note=note) for m in possible[:3]]
    if unknown:
        reason = unidentified_reason(terms, component.valueset, unknown[0])
        text += "; " + and_more(reason, len(unknown))
        cited += [
            medication_evidence(m, note=unidentified_reason(terms, component.valueset, m))
            for m in unknown[:3]
        ]
    return text, cited


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
        ok: bool | None
        if component.min_prednisone_mg_per_kg_day is not None:
            ok, text, shown = _dose_component(
                component, meds, weights, rule.weight_lookback_days, ctx
            )
        elif component.duration_months_more_than is not None:
            ok, text, shown = _duration_component(component, meds, ctx)
        else:
            ok = True if meds else None
            text = f"{component.name} documented" if meds else f"no record of {component.name}"
            shown = [medication_evidence(m) for m in meds[:5]]
        if not ok:
            review, cited = _review_note(component, facts, ctx.as_of, ctx.terms)
            text += review
            shown += cited
        (found if ok else missing).append(text)
        evidence += shown
    if not missing:
        return Verdict(
            "pass", "conventional therapy documented: " + "; ".join(found), tuple(evidence)
        )
    return Verdict("unknown", "; ".join(missing), tuple(evidence))
