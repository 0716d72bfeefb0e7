"""`measurement`: the latest result against a fixed limit or a multiple of the ULN.

The most recent result on or before `as_of` inside the look-back window decides (ordered by
full timestamp when the lab sent one); with none, the verdict is `unknown` and older results
are shown. Results the record cannot order (the same instant, or a date without a time) that
disagree on the verdict give `unknown`, naming both. Options: a value derived as a product of
other results (ANC = WBC x neutrophil %), results invalidated by a recent medication (G-CSF),
a limit raised by a diagnosis (Gilbert's syndrome).

x ULN: the ULN is the `high` of the result's reference ranges of type normal (or untyped) that
apply to the patient's sex and age, never a therapeutic or other range, nor a placeholder ("0-0",
a high of 0, swapped limits) or a high more than PLAUSIBLE_FACTOR times off the value set's
`uln_interval` (a limit sent without its unit, in another one). Without one, the value
set's `uln_interval` (ULNs in common use) is tried: the verdict stands only when it is the same
for every ULN in it, otherwise `unknown` ("no reference range sent").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from service.criteria.common import (
    PLAUSIBLE_FACTOR,
    Context,
    age_range,
    compare_bounded,
    diagnosis_evidence,
    first_in_window,
    fmt,
    instant,
    lab_evidence,
    medication_evidence,
    newer_problem,
    newer_problem_reason,
    newer_unreadable,
    older_evidence,
    on_day,
    on_or_before,
    tied_with_first,
    title,
    unidentified,
    unidentified_reason,
    unreadable,
    unreadable_reason,
    usable,
    window_days,
)
from service.criteria.exposure import exposure, undated
from service.criteria.model import MeasurementRule
from service.criteria.scores import activity_verdict
from service.criteria.verdict import Evidence, Verdict, VerdictValue
from service.facts import MAYBE_LATER, LabResult, PatientFacts, RefRange
from service.terminology import UlnInterval

__all__ = ["evaluate_measurement", "usable_ulns"]

MEDICATION_TYPES = (
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
)
# referenceRange.type codes (HL7 referencerange-meaning) that state the normal range.
NORMAL_RANGE_TYPES = frozenset({None, "normal"})


@dataclass(slots=True, unsafe_hash=True)  # not frozen: built per reading (see facts.py)
class Reading:
    """One value that may decide: a result, or a product derived from several."""

    value: float
    day: date
    result: LabResult | None = None
    inputs: tuple[LabResult, ...] = ()
    comparator: str | None = None
    at: float | None = None  # the instant, when every source sent one


def evaluate_measurement(rule: MeasurementRule, facts: PatientFacts, ctx: Context) -> Verdict:
    verdict = _evaluate_recorded(rule, facts, ctx)
    if rule.activity is None or rule.op not in (">", ">=") or rule.value is None:
        return verdict
    days = window_days(ctx, rule.lookback_days)
    start = ctx.as_of - timedelta(days=days)
    recorded = any(
        r.effective is not None and start <= r.effective <= ctx.as_of
        for r in facts.labs_for(rule.lab)
    )
    if recorded:
        return verdict  # a recorded total in the window decides, as without a computed score
    return activity_verdict(verdict, rule.activity, (rule.op, rule.value), facts, ctx)


def _evaluate_recorded(rule: MeasurementRule, facts: PatientFacts, ctx: Context) -> Verdict:
    days = window_days(ctx, rule.lookback_days)
    history = on_or_before(facts.labs_for(rule.lab), ctx.as_of)
    readable = usable(history)
    hidden = _unconvertible_newest(rule, ctx, days, history, readable)
    if hidden is not None:
        return hidden
    latest = tied_with_first(readable) if first_in_window(readable, ctx.as_of, days) else []
    readings = [_reading_of(r) for r in latest]
    derived = _derive_product(rule, facts, ctx, days) if rule.derive_product else None
    # The most recent value decides, measured or derived; a measured count of the same
    # instant is the code the rule asks for and wins the tie.
    if derived is not None and (not readings or _newer(derived, readings[0])):
        readings = [derived]
    if not readings:
        problem = unreadable(facts, "Observation", concepts=[rule.lab])
        return _no_result(ctx, rule.lab, days, history, problem)
    used = {id(r.result) for r in readings}
    older = older_evidence([r for r in history if id(r) not in used], None, days)
    hidden_by = newer_problem(facts, rule.lab, readings[0].day, ctx.as_of)
    if hidden_by is not None:
        shown = [
            lab_evidence(r.result, note="older than an unreadable record")
            for r in readings
            if r.result is not None
        ]
        return Verdict(
            "unknown",
            newer_problem_reason(title(ctx.terms, rule.lab), hidden_by),
            (*shown, *older),
        )
    return _combine([_judge(rule, facts, ctx, reading) for reading in readings], older)


def _unconvertible_newest(
    rule: MeasurementRule,
    ctx: Context,
    days: int,
    history: list[LabResult],
    readable: list[LabResult],
) -> Verdict | None:
    """A newer result whose unit cannot be converted, or that sends no number we can read
    ("2,1", an interpretation flag only), hides what the latest value is: it is shown, and an
    older readable result does not decide in its place (one of the same instant does)."""
    newest = newer_unreadable(history, readable, ctx.as_of, days)
    maybe_later = newest is not None and newest.status == MAYBE_LATER
    if newest is None or (newest.quantity is None and not readable and not maybe_later):
        return None  # a result without a number and nothing older to hide: `_no_result`
    note = (
        f"may be after {ctx.as_of}; not compared"
        if maybe_later
        else "no numeric value; not compared"
        if newest.quantity is None
        else "unit cannot be converted; not compared"
    )
    return Verdict(
        "unknown",
        unreadable_reason(title(ctx.terms, rule.lab), newest, ctx.as_of),
        (lab_evidence(newest, note=note), *older_evidence(history, newest, days)),
    )


def _combine(verdicts: list[Verdict], older: list[Evidence]) -> Verdict:
    """One verdict from the readings of one instant: theirs when they agree, else unknown
    naming each."""
    if len({v.verdict for v in verdicts}) > 1:
        return Verdict(
            "unknown",
            "results at the same time disagree: "
            + "; ".join(f"{v.reason} ({v.verdict})" for v in verdicts),
            tuple(e for v in verdicts for e in v.evidence[:1]) + tuple(older),
        )
    first = verdicts[0]
    shown = [e for v in verdicts[1:] for e in v.evidence[:1]]
    return Verdict(first.verdict, first.reason, first.evidence + tuple(shown) + tuple(older))


def _reading_of(result: LabResult) -> Reading:
    assert result.quantity is not None and result.quantity.canonical_value is not None
    assert result.effective is not None
    return Reading(
        value=result.quantity.canonical_value,
        day=result.effective,
        result=result,
        comparator=result.quantity.comparator,
        at=instant(result),
    )


def _newer(derived: Reading, measured: Reading) -> bool:
    """Whether a derived value is later than a measured one (by instant when both have one)."""
    if derived.day != measured.day:
        return derived.day > measured.day
    return derived.at is not None and measured.at is not None and derived.at > measured.at


def _no_result(
    ctx: Context, concept: str, days: int, history: list[LabResult], problem: str | None
) -> Verdict:
    """`unknown`: no readable result in the window; when a search failed or a record of the
    lab could not be read, that is the reason (missing data is not "no result")."""
    unconvertible = [
        r for r in history if r.quantity is not None and r.quantity.canonical_value is None
    ]
    reason = f"no {title(ctx.terms, concept)} result in the {days} days before {ctx.as_of}"
    start = ctx.as_of - timedelta(days=days)
    valueless = [
        r
        for r in history
        if r.quantity is None and r.effective is not None and r.effective >= start
    ]
    if unconvertible:
        unit = unconvertible[0].quantity.unit if unconvertible[0].quantity else None
        reason += f" that could be read (unit {unit!r} cannot be converted)"
    elif valueless:
        # A result sent without a number (an interpretation flag or a text only) is a result:
        # it is shown for what it is, not as an older one.
        first = valueless[0]
        reason += f" with a number ({first.reference} {on_day(first)} sends none we can read)"
    if problem:
        reason = f"{problem}: {reason}"
    shown = [lab_evidence(r, note="no numeric value; not compared") for r in valueless[:3]]
    notes = shown + older_evidence([r for r in history if r not in valueless], None, days)
    return Verdict("unknown", reason, tuple(notes[:3]))


@dataclass(slots=True, unsafe_hash=True)  # not frozen: built per reading (see facts.py)
class Limit:
    """The limits a value is compared with (several when the ULN is not known exactly)."""

    values: tuple[float, ...]
    text: str
    evidence: tuple[Evidence, ...] = ()
    undecided: str | None = None  # why a verdict that differs across `values` is unknown


def _judge(rule: MeasurementRule, facts: PatientFacts, ctx: Context, reading: Reading) -> Verdict:
    info = ctx.terms.valuesets[rule.lab]
    unit = info.canonical_unit or ""
    limit = _limit(rule, facts, ctx, reading.result)
    outcomes = {
        compare_bounded(reading.value, reading.comparator, rule.op, v) for v in limit.values
    }
    shown = f"{reading.comparator or ''}{fmt(reading.value)} {unit}"
    test = f"{info.title} {shown} {rule.op} {limit.text}"
    evidence = [*_reading_evidence(reading, unit, test), *limit.evidence]
    if (invalid := _growth_factor(rule, facts, ctx, reading.day, evidence)) is not None:
        return invalid
    if None in outcomes:
        return Verdict("unknown", f"{test}: the reported bound cannot decide", tuple(evidence))
    if len(outcomes) != 1:
        return Verdict("unknown", f"{test}: {limit.undecided}", tuple(evidence))
    outcome = outcomes.pop()
    # Records that could change the verdict but could not be read withhold it.
    if outcome and rule.invalid_after_medication is not None:
        problem = unreadable(
            facts, *MEDICATION_TYPES, concepts=[rule.invalid_after_medication.valueset]
        )
        if problem:
            return Verdict(
                "unknown", f"{test}, but {problem} (G-CSF cannot be ruled out)", tuple(evidence)
            )
    if not outcome and rule.raised_limit_if_diagnosis is not None and not limit.evidence:
        problem = unreadable(facts, "Condition", concepts=[rule.raised_limit_if_diagnosis.valueset])
        if problem:
            return Verdict(
                "unknown",
                f"{test}, but {problem} (a raised limit cannot be ruled out)",
                tuple(evidence),
            )
    verdict: VerdictValue = "pass" if outcome else "fail"
    met = "met" if outcome else "not met"
    return Verdict(verdict, f"{test} on {reading.day}: {met}", tuple(evidence))


def _reading_evidence(reading: Reading, unit: str, test: str) -> list[Evidence]:
    if reading.result is not None:
        return [lab_evidence(reading.result, rule=test)]
    return [
        Evidence(
            reference=None,
            value=round(reading.value, 4),
            unit=unit,
            converted_value=round(reading.value, 4),
            converted_unit=unit,
            date=reading.day,
            rule=test,
            note=f"derived: product of {', '.join(i.reference for i in reading.inputs)}",
            inputs=tuple(i.reference for i in reading.inputs),
        ),
        *(lab_evidence(i, note="input to the derived value") for i in reading.inputs),
    ]


def _limit(
    rule: MeasurementRule, facts: PatientFacts, ctx: Context, result: LabResult | None
) -> Limit:
    """The fixed limit, or the multiple of every ULN that may apply to this result."""
    info = ctx.terms.valuesets[rule.lab]
    unit = info.canonical_unit or ""
    if rule.value is not None and rule.unit is not None:
        value = rule.value * ctx.terms.factor(rule.unit, unit, info.molar_mass)
        return Limit((value,), f"{fmt(value)} {unit}")
    assert rule.uln_multiple is not None
    multiple, raised = _multiple(rule, facts, ctx)
    ulns = usable_ulns(result, facts, ctx.as_of) if result is not None else []
    implausible = ""
    if ulns and info.uln_interval is not None:
        ulns, implausible = _plausible(ulns, info.uln_interval, ctx, unit, info.molar_mass)
    if ulns:
        source = "the lab's reference range" + (
            "s that may apply (sex or age not recorded)" if len(set(ulns)) > 1 else ""
        )
        undecided = f"the verdict differs between the ULNs of {source}"
    elif info.uln_interval is not None:
        span = info.uln_interval
        factor = ctx.terms.factor(span.unit, unit, info.molar_mass)
        ulns = [span.low * factor, span.high * factor]
        missing = implausible or "no reference range sent"
        source = f"ULNs in common use: {missing}"
        undecided = (
            f"{missing}, and the verdict differs within the ULNs in common use "
            f"({fmt(ulns[0])}-{fmt(ulns[1])} {unit}); ask the lab for its reference range"
        )
    else:
        return Limit(
            (),
            f"{fmt(multiple)} x ULN (no reference range sent)",
            raised,
            undecided="no reference range sent",
        )
    low, high = min(ulns), max(ulns)
    uln_text = fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"
    limit_text = (
        fmt(multiple * low) if low == high else f"{fmt(multiple * low)}-{fmt(multiple * high)}"
    )
    return Limit(
        tuple(multiple * u for u in sorted(set(ulns))),
        f"{fmt(multiple)} x ULN {uln_text} = {limit_text} {unit} (ULN from {source})",
        raised,
        undecided,
    )


def _plausible(
    ulns: list[float], span: UlnInterval, ctx: Context, unit: str, molar_mass: float | None
) -> tuple[list[float], str]:
    """The ULNs no further than PLAUSIBLE_FACTOR from the ULNs in common use, and why the
    others are not used: a limit sent without its unit in another one (an ALT range "0.67"
    in ukat/L beside a value in U/L) or a placeholder is no ULN of this analyte."""
    factor = ctx.terms.factor(span.unit, unit, molar_mass)
    low, high = span.low * factor / PLAUSIBLE_FACTOR, span.high * factor * PLAUSIBLE_FACTOR
    kept = [u for u in ulns if low <= u <= high]
    if len(kept) == len(ulns):
        return ulns, ""
    dropped = ", ".join(sorted({fmt(u) for u in ulns if u not in kept}))
    return kept, (
        f"the lab's reference range high {dropped} {unit} is not a plausible ULN "
        f"({fmt(span.low * factor)}-{fmt(span.high * factor)} {unit} in common use)"
    )


def _multiple(
    rule: MeasurementRule, facts: PatientFacts, ctx: Context
) -> tuple[float, tuple[Evidence, ...]]:
    """The ULN multiple, raised by a confirmed diagnosis (Gilbert's syndrome), with why."""
    assert rule.uln_multiple is not None
    raised = rule.raised_limit_if_diagnosis
    if raised is None:
        return rule.uln_multiple, ()
    reasons = [
        dx
        for dx in facts.diagnoses_for(raised.valueset)
        if not dx.uncertain and (dx.onset is None or dx.onset <= ctx.as_of)
    ]
    if not reasons:
        return rule.uln_multiple, ()
    note = f"raises the limit to {fmt(raised.uln_multiple)} x ULN"
    return raised.uln_multiple, (diagnosis_evidence(reasons[0], note=note),)


def usable_ulns(result: LabResult, facts: PatientFacts, as_of: date) -> list[float]:
    """The upper limits (canonical unit) of the result's normal ranges that may apply to the
    patient: type normal or untyped; for the patient's sex (any sex when it is not recorded);
    for the patient's age (any age band when the birth date is not known)."""
    ranges = result.ref_ranges
    if not ranges and result.ref_high is not None:
        # Facts built without `ref_ranges` carry only the first range's high, type unknown.
        ranges = (RefRange(low=None, high=result.ref_high),)
    sex = facts.demographics.sex if facts.demographics else None
    ages = age_range(facts.demographics, result.effective or as_of)
    found = []
    for entry in ranges:
        high = entry.high
        if high is None or high.canonical_value is None or entry.type not in NORMAL_RANGE_TYPES:
            continue
        if entry.placeholder:
            continue  # "0-0", a high of 0, limits swapped: not a range
        if entry.sex is None and entry.applies_to:
            continue  # a population we cannot place the patient in (pregnancy, race ...)
        if entry.sex is not None and sex in ("female", "male") and entry.sex != sex:
            continue
        if ages is not None and not _age_applies(entry, ages):
            continue
        found.append(high.canonical_value)
    return found


def _age_applies(entry: RefRange, ages: tuple[int, int]) -> bool:
    youngest, oldest = ages
    if entry.age_low_years is not None and youngest < entry.age_low_years:
        return False
    return entry.age_high_years is None or oldest <= entry.age_high_years


def _growth_factor(
    rule: MeasurementRule, facts: PatientFacts, ctx: Context, day: date, evidence: list[Evidence]
) -> Verdict | None:
    """`unknown` when a colony-stimulating factor ran within the days before the test.

    Which days a record covers is `exposure`'s policy (an active or on-hold order without an
    end runs up to the test date; a finished course up to its end). A record no value set
    knows whose text suggests the drug (review terms) counts too, and so does one whose drug
    is unknown (it names a Medication that could not be read: `unidentified`): never `pass`
    on either. A record with no date could be any day (`undated`): it may be in the window.
    A coded record is named first, then a review-term match, then an unknown drug.
    """
    invalid = rule.invalid_after_medication
    if invalid is None:
        return None
    since = day - timedelta(days=invalid.within_days_before)
    name = title(ctx.terms, invalid.valueset)
    candidates = []
    for med in facts.medications:
        if invalid.valueset in med.concepts:
            candidates.append((0, med))
        elif invalid.valueset in med.review:
            candidates.append((1, med))
        elif unidentified(med):
            candidates.append((2, med))
    for rank, med in sorted(candidates, key=lambda c: c[0]):
        span = exposure(med, day, ctx.terms)
        if undated(med, since, running_only=False):
            window = f"possibly within {invalid.within_days_before} days before the test"
            basis = f"{med.status}, no date recorded"
        elif span is None or span.start > day or span.end < since:
            continue
        else:
            window = f"within {invalid.within_days_before} days before the test"
            basis = span.basis
        if rank == 0:
            note, why = f"{window} ({basis})", f"{name} ({med.reference})"
        elif rank == 1:
            code = med.codes[0] if med.codes else None
            where = f"{code.system} {code.code}, " if code else ""
            note = f"possible {name}: {med.text!r} ({where}not in the value set): review"
            why = f"possible {name} ({med.reference}: {med.text!r}, not in the value set; review)"
        else:
            note = unidentified_reason(ctx.terms, invalid.valueset, med)
            why = (
                f"an unknown drug, possibly {name} ({med.reference} names {med.unresolved}; review)"
            )
        return Verdict(
            "unknown",
            f"the count on {day} was drawn {window} of {why}; repeat the test",
            (*evidence, medication_evidence(med, note=note)),
        )
    return None


def _derive_product(
    rule: MeasurementRule, facts: PatientFacts, ctx: Context, days: int
) -> Reading | None:
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
    inputs = tuple(by_day[day] for by_day in per_lab)
    value = spec.scale
    for item in inputs:
        assert item.quantity is not None and item.quantity.canonical_value is not None
        value *= item.quantity.canonical_value
    moments = [instant(i) for i in inputs]
    at = None if None in moments else max(m for m in moments if m is not None)
    return Reading(value=value, day=day, inputs=inputs, at=at)
