"""Helpers every rule uses: the evaluation context, time windows, comparisons, evidence."""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from operator import attrgetter

from service.criteria.model import Op
from service.criteria.verdict import Evidence
from service.facts import Demographics, Diagnosis, LabResult, MedicationExposure, PatientFacts
from service.terminology import Terminology


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may consult besides the patient's facts. No I/O behind any of it."""

    as_of: date
    terms: Terminology
    trial_id: str
    default_lookback_days: int


def fmt(number: float) -> str:
    """A number as a clinician writes it: 62, 0.85, 1.7 (at most 3 significant decimals)."""
    if number == int(number) and abs(number) < 1e12:
        return str(int(number))
    return f"{number:.3g}" if abs(number) < 1 else f"{round(number, 2):g}"


def add_months(day: date, months: int) -> date:
    """Calendar months: 31 Aug + 6 months is 28/29 Feb, not 3 March."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def age_range(demographics: Demographics | None, day: date) -> tuple[int, int] | None:
    """(youngest, oldest) possible age at `day`; equal unless the birth date is partial.

    Never past death: a patient who died before `day` is as old as on the day of death, and
    one recorded deceased without a date has no age we can compute.
    """
    if demographics is None or demographics.birth_date is None:
        return None
    if demographics.deceased:
        if demographics.deceased_date is None:
            return None
        day = min(day, demographics.deceased_date)
    latest = demographics.birth_date_latest or demographics.birth_date
    return age_on(latest, day), age_on(demographics.birth_date, day)


def compare(value: float, op: Op, limit: float) -> bool:
    # Results are compared after unit conversion; a hair of float noise must not flip a
    # boundary (60 g/L sent as 6.0 g/dL is 60.00000000000001 g/L).
    if math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12):
        value = limit
    match op:
        case ">":
            return value > limit
        case ">=":
            return value >= limit
        case "<":
            return value < limit
        case "<=":
            return value <= limit
        case "=":
            return value == limit


def compare_bounded(value: float, comparator: str | None, op: Op, limit: float) -> bool | None:
    """Like `compare`, for a result such as "<5" that only bounds the true value.

    True/False when every value the result allows gives that answer, None when they differ.
    """
    if comparator is None:
        return compare(value, op, limit)
    if comparator in ("<", "<="):
        low, high = -math.inf, value
    elif comparator in (">", ">="):
        low, high = value, math.inf
    else:
        return compare(value, op, limit)
    # Probe just inside an open bound so "<5" is never taken to mean 5. The step must be
    # wider than `compare`'s float tolerance, or the probe snaps back onto the bound.
    nudge = max(abs(value) * 1e-6, 1e-9)
    if comparator == "<":
        high = value - nudge
    if comparator == ">":
        low = value + nudge
    at_low, at_high = compare(low, op, limit), compare(high, op, limit)
    return at_low if at_low == at_high else None


_NEWEST_FIRST = attrgetter("effective", "reference")


def on_or_before(results: Iterable[LabResult], as_of: date) -> list[LabResult]:
    """Dated results not after `as_of`, newest first. Later results do not exist yet."""
    dated = [r for r in results if r.effective is not None and r.effective <= as_of]
    dated.sort(key=_NEWEST_FIRST, reverse=True)
    return dated


def latest_in_window(results: Sequence[LabResult], as_of: date, days: int) -> LabResult | None:
    """The most recent result on or before `as_of` and no older than `days`.

    Older results are still shown as evidence by the caller; they never decide a verdict.
    """
    return first_in_window(on_or_before(results, as_of), as_of, days)


def first_in_window(history: Sequence[LabResult], as_of: date, days: int) -> LabResult | None:
    """`latest_in_window` of a history already newest first and not after `as_of` (as
    `on_or_before` returns it, or a filtered copy): its first result, if in the window."""
    if not history:
        return None
    first = history[0]
    start = as_of - timedelta(days=days)
    return first if first.effective is not None and first.effective >= start else None


def lab_evidence(result: LabResult, rule: str | None = None, note: str | None = None) -> Evidence:
    quantity = result.quantity
    value: float | str | None = quantity.value if quantity else result.text
    if quantity and quantity.comparator:
        value = f"{quantity.comparator}{fmt(quantity.value)}"
    return Evidence(
        reference=result.reference,
        code=result.codes[0] if result.codes else None,
        value=value,
        unit=quantity.unit if quantity else None,
        converted_value=(
            round(quantity.canonical_value, 4)
            if quantity and quantity.canonical_value is not None
            else None
        ),
        converted_unit=quantity.canonical_unit if quantity else None,
        date=result.effective,
        rule=rule,
        note=note,
    )


def older_evidence(
    results: Sequence[LabResult], used: LabResult | None, days: int
) -> list[Evidence]:
    """Up to three other results, labelled as not deciding the verdict."""
    shown = []
    for result in results:
        if result is used:
            continue
        shown.append(lab_evidence(result, note=f"not the latest within {days} days; not used"))
        if len(shown) == 3:
            break
    return shown


def diagnosis_evidence(dx: Diagnosis, rule: str | None = None, note: str | None = None) -> Evidence:
    return Evidence(
        reference=dx.reference,
        code=dx.codes[0] if dx.codes else None,
        date=dx.onset or dx.recorded,
        rule=rule,
        note=note,
    )


def medication_evidence(
    med: MedicationExposure, rule: str | None = None, note: str | None = None
) -> Evidence:
    return Evidence(
        reference=med.reference,
        code=med.codes[0] if med.codes else None,
        value=med.dose.value if med.dose else None,
        unit=med.dose.unit if med.dose else None,
        date=med.start,
        rule=rule,
        note=note,
    )


def title(terms: Terminology, concept: str) -> str:
    info = terms.valuesets.get(concept)
    return info.title if info else concept


def unreadable(
    facts: PatientFacts, *resource_types: str, concepts: Iterable[str] | None = None
) -> str | None:
    """A reason to withhold a verdict: records of these types, possibly about these value
    sets, that could not be read."""
    problems = facts.problems_with(
        *resource_types, concepts=None if concepts is None else set(concepts)
    )
    if not problems:
        return None
    kinds = sorted({p.resource_type for p in problems})
    return f"{len(problems)} {'/'.join(kinds)} record(s) could not be read ({problems[0].where})"
