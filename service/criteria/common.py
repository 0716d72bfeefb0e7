"""Helpers every rule uses: the evaluation context, time windows, comparisons, evidence, and
the fail / unclear / unreadable / pass ladder that record-based rules climb down (`decide`)."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, timedelta
from typing import Literal

from service.criteria.model import Op
from service.criteria.verdict import Evidence, Verdict, VerdictValue
from service.facts import (
    MAYBE_LATER,
    Code,
    Demographics,
    Diagnosis,
    LabResult,
    MedicationExposure,
    PatientFacts,
    Problem,
    written,
)
from service.terminology import Terminology


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may consult besides the patient's facts. No I/O behind any of it."""

    as_of: date
    terms: Terminology
    trial_id: str
    default_lookback_days: int


# A lab's reference limit more than this many times below or above the limits in common use
# (a value set's `uln_interval`, an instrument's fixed fallback) is taken for a limit sent in
# another unit, not a limit of the analyte (judgement).
PLAUSIBLE_FACTOR = 3.0


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

    None when the birth date is unknown or after `day`: an age is never negative. Never past
    death: a patient who died before `day` is as old as on the day of death, and one recorded
    deceased without a date has no age we can compute.
    """
    if demographics is None or demographics.birth_date is None:
        return None
    last_day = day
    if demographics.deceased:
        if demographics.deceased_date is None:
            return None
        # A partial date of death ("2026") ends the age on its first or on its last day.
        died_last = demographics.deceased_date_latest or demographics.deceased_date
        day, last_day = min(day, demographics.deceased_date), min(day, died_last)
    if day < demographics.birth_date:
        return None
    latest = demographics.birth_date_latest or demographics.birth_date
    return max(0, age_on(latest, day)), age_on(demographics.birth_date, last_day)


NO_BIRTH_DATE = "date of birth not recorded"


def age_missing(demographics: Demographics | None, day: date) -> str:
    """Why `age_range` has no age at `day`: what a coordinator would have to find."""
    if demographics is None or demographics.birth_date is None:
        return NO_BIRTH_DATE
    if demographics.deceased and demographics.deceased_date is None:
        return "recorded deceased without a date of death: age at death not known"
    return f"date of birth {demographics.birth_date} is after {day}"


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


def window_days(ctx: Context, days: int | None) -> int:
    """A rule's look-back window, or the trial's default."""
    return days if days is not None else ctx.default_lookback_days


def usable(results: list[LabResult]) -> list[LabResult]:
    """Results with a value converted to the value set's canonical unit."""
    return [r for r in results if r.quantity is not None and r.quantity.canonical_value is not None]


def instant(result: LabResult) -> float | None:
    """The result's full timestamp as seconds since the epoch, None when only a date was sent.

    A timestamp without an offset is read as UTC: one lab sends all its results alike, so
    their order is kept.
    """
    at = result.effective_at
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def _newest_first(result: LabResult) -> tuple[date, float]:
    # Date first (effective is the date as recorded; a partial date by its first day, one
    # that may be after `as_of` by its last: it comes first), then the instant; a date-only
    # result sorts after the timed ones of its day. Never the reference: ids carry no time.
    moment = instant(result)
    day = result.effective or date.min
    if result.status == MAYBE_LATER and result.effective_latest is not None:
        day = result.effective_latest
    return (day, -math.inf if moment is None else moment)


def on_or_before(results: Iterable[LabResult], as_of: date) -> list[LabResult]:
    """Dated results not after `as_of`, newest first (by full timestamp when sent; equal ones
    keep the order they came in). Later results do not exist yet.

    A result with a partial date that may be after `as_of` ("2026-11" on 5 November) may be
    the latest or not exist yet: it is kept with no reading, like a result whose status
    cannot be read (`LabResult.status_unread`), so no earlier result decides in its place."""
    dated = [r for r in results if r.effective is not None and r.effective <= as_of]
    for i, result in enumerate(dated):
        if result.effective_latest is not None and result.effective_latest > as_of:
            dated[i] = _maybe_later(result)
    dated.sort(key=_newest_first, reverse=True)
    return dated


def _maybe_later(result: LabResult) -> LabResult:
    quantity = result.quantity
    shown = result.text or (
        f"{fmt(quantity.value)} {quantity.unit or ''}".strip() if quantity else None
    )
    return replace(
        result,
        status=MAYBE_LATER,
        quantity=None,
        qualitative=None,
        grade=None,
        titer=None,
        interpretation=(),
        text=shown,
    )


def same_instant(a: LabResult, b: LabResult) -> bool:
    """Whether the record cannot tell which of two results came later: the same date and
    the same timestamp, or a date without a time on either side; with a partial date, days
    that overlap."""
    if a.effective_latest is not None or b.effective_latest is not None:
        if a.effective is None or b.effective is None:
            return False
        return a.effective <= (b.effective_latest or b.effective) and b.effective <= (
            a.effective_latest or a.effective
        )
    if a.effective != b.effective:
        return False
    at_a, at_b = instant(a), instant(b)
    return at_a is None or at_b is None or at_a == at_b


def tied_with_first(history: Sequence[LabResult]) -> list[LabResult]:
    """The first (newest) result of a newest-first history and every result the record cannot
    place after or before it (`same_instant`)."""
    if not history:
        return []
    first = history[0]
    return [r for r in history if r is first or same_instant(first, r)]


def prefer(results: Sequence[LabResult], concept: str | None) -> list[LabResult]:
    """Of results at one instant, those in the value set the rule prefers (serum creatinine
    over whole blood), or all of them when none is."""
    if concept is None:
        return list(results)
    preferred = [r for r in results if concept in r.concepts]
    return preferred or list(results)


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


def newer_unreadable(
    history: Sequence[LabResult], readable: Sequence[LabResult], as_of: date, days: int
) -> LabResult | None:
    """The newest result in the window when no value can be compared from it (a unit that
    does not convert, no number at all) and it is later than the newest readable one: it
    hides what the latest value is, so the older one must not decide in its place."""
    newest = first_in_window(history, as_of, days)
    if newest is not None and newest.status == MAYBE_LATER:
        return newest  # it may be on any day up to `as_of`: before or after any other
    if (
        newest is None
        or (newest.quantity is not None and newest.quantity.canonical_value is not None)
        or (readable and same_instant(newest, readable[0]))
    ):
        return None
    return newest


def unreadable_reason(name: str, result: LabResult, as_of: date | None = None) -> str:
    """Why the latest result of `name` cannot be compared (`as_of`: the day screened)."""
    where = f"the latest {name} result ({result.reference} {on_day(result)})"
    if result.status == MAYBE_LATER:
        day = as_of or "the day screened"
        return f"{where} may be after {day}; an earlier one does not decide"
    if result.status_unread:
        return f"{where} {result.status_phrase}; an earlier one does not decide"
    if result.quantity is None:
        return f"{where} sends no number we can read; an earlier one does not decide"
    return f"{where} has unit {result.quantity.unit!r}, which cannot be converted"


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
        date=result.effective if result.effective_latest is None else None,
        rule=rule,
        note=note if result.effective_latest is None else partial_note(on_day(result), note),
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


def on_day(result: LabResult) -> str:
    """ "on 2026-11-03", or "dated 2026-11" for a partial date: the date as written."""
    if result.effective is None:
        return "undated"
    if result.effective_latest is None:
        return f"on {result.effective}"
    return f"dated {written(result.effective, result.effective_latest)}"


def partial_note(dated: str, note: str | None) -> str:
    """An evidence note that carries a partial date as written ("dated 2021"), since the
    evidence `date` field holds only full days."""
    return dated if note is None else f"{dated}; {note}"


def diagnosis_evidence(dx: Diagnosis, rule: str | None = None, note: str | None = None) -> Evidence:
    first, last = dx.began()
    day = first
    if last is not None and first is not None:
        what = "onset" if dx.onset is not None else "recorded"
        day, note = None, partial_note(f"{what} {written(first, last)}", note)
    return Evidence(
        reference=dx.reference,
        code=dx.codes[0] if dx.codes else None,
        date=day,
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
        date=med.start if med.start_latest is None else None,
        rule=rule,
        note=note
        if med.start is None or med.start_latest is None
        else partial_note(f"started {written(med.start, med.start_latest)}", note),
    )


def title(terms: Terminology, concept: str) -> str:
    info = terms.valuesets.get(concept)
    return info.title if info else concept


def unreadable(
    facts: PatientFacts, *resource_types: str, concepts: Iterable[str] | None = None
) -> str | None:
    """A reason to withhold a verdict: records of these types, possibly about these value
    sets, that could not be read. A failed search is named as such, with its status and cause
    (a lab rule says "the Observation search failed (...)", never "no result: order the lab")."""
    if not facts.problems:  # most patients: nothing unreadable, nothing to build
        return None
    problems = facts.problems_with(
        *resource_types, concepts=None if concepts is None else set(concepts)
    )
    if not problems:
        return None
    failed = [p for p in problems if p.concepts is None and p.message.startswith(_FAILED)]
    if failed:
        # A failed search says so, with its status and cause: it is not a missing record.
        return f"the {failed[0].resource_type} search failed ({_cause(failed[0].message)})"
    kinds = sorted({p.resource_type for p in problems})
    return f"{len(problems)} {'/'.join(kinds)} record(s) could not be read ({problems[0].where})"


_FAILED = "fetch failed: "  # how service/fetching.py and service/cds/prefetch.py say it


def newer_problem(
    facts: PatientFacts, lab: str, latest: date | None, as_of: date
) -> Problem | None:
    """An unreadable record of this lab that may be newer than the latest readable result
    (dated on or after it and not after `as_of`, or undated): the older result must not decide
    in its place. Only records known to be of this lab (their code was read): a failed search
    leaves no result at all and is reported by `unreadable`."""
    if not facts.problems:
        return None
    for problem in facts.problems_with("Observation", concepts={lab}):
        if problem.concepts is None:
            continue
        if problem.day is None or (
            problem.day <= as_of and (latest is None or problem.day >= latest)
        ):
            return problem
    return None


def newer_problem_reason(name: str, problem: Problem) -> str:
    when = f"on {problem.day}" if problem.day else "undated"
    return (
        f"a {name} record ({problem.where}, {when}) could not be read: {problem.message}; "
        "an earlier result does not decide"
    )


def _cause(message: str) -> str:
    """A failed search's message without the `fetch failed: ` prefix the fetcher puts on it."""
    return message.removeprefix(_FAILED)


@dataclass(slots=True)
class Findings:
    """What a rule found in the record, sorted onto the rungs of the ladder (see `decide`)."""

    decisive: list[Evidence] = field(default_factory=list)  # decides on its own
    doubts: list[tuple[str, Evidence]] = field(default_factory=list)  # (why unclear, evidence)
    shown: list[Evidence] = field(default_factory=list)  # found, does not count: shown only

    def doubt(self, reason: str, evidence: Evidence) -> None:
        self.doubts.append((reason, evidence))


def decide(
    found: Findings,
    *,
    decided: Callable[[Evidence], str],
    problem: str | None,
    nothing: str,
    only_shown: str,
    absent: str,
    decisive_verdict: Literal["fail", "pass"] = "fail",
) -> Verdict:
    """The ladder every record-based rule uses, written once:

    1. decisive evidence -> `decisive_verdict` (`fail` for an exclusion; `pass` for a required
       diagnosis), reason `decided(first)`;
    2. a doubt -> `unknown`, with the first doubt's reason;
    3. records of the types the rule reads that could not be read (`problem`) -> `unknown`
       ("<nothing>, but <problem>"): unreadable is not absent;
    4. otherwise the opposite verdict: `only_shown` when records were found that do not count,
       else `absent` ("no record of ...").

    Evidence is ordered decisive, doubtful, shown, so the first item is what decided.
    """
    doubtful = [evidence for _, evidence in found.doubts]
    if found.decisive:
        evidence = tuple(found.decisive + doubtful + found.shown)
        return Verdict(decisive_verdict, decided(found.decisive[0]), evidence)
    if found.doubts:
        return Verdict("unknown", found.doubts[0][0], tuple(doubtful + found.shown))
    if problem:
        return Verdict("unknown", f"{nothing}, but {problem}", tuple(found.shown))
    otherwise: VerdictValue = "fail" if decisive_verdict == "pass" else "pass"
    if found.shown:
        return Verdict(otherwise, only_shown, tuple(found.shown))
    return Verdict(otherwise, absent)


def and_more(first: str, count: int) -> str:
    """`first`, or "`first` and N more" when `count` items were found."""
    return first + (f" and {count - 1} more" if count > 1 else "")


SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://loinc.org": "LOINC",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT",
}


def review_reason(
    terms: Terminology, valueset: str, codes: Sequence[Code], text: str | None
) -> str:
    """Why a record no value set knows keeps a criterion from passing on absence:
    "possible <title>: '<display>' (<system> <code>, not in the value set): review"."""
    first = codes[0] if codes else None
    where = f"{SYSTEM_NAMES.get(first.system, first.system)} {first.code}" if first else "no code"
    if first is not None and not text and not any(c.display for c in codes):
        if not any(terms.covers_system(c.system) for c in codes):
            return (
                f"possible {title(terms, valueset)}: a record coded {where}, a code system no "
                "table covers, with no text to read: review"
            )
    shown = text or (first.display or first.code if first else None) or "no text"
    return f"possible {title(terms, valueset)}: '{shown}' ({where}, not in the value set): review"


def unidentified(med: MedicationExposure) -> bool:
    """A record whose drug is unknown: it names a Medication that could not be read
    (`MedicationExposure.unresolved`), and its display, if any, matches no review term.

    Unmapped is not absent. Every rule that reads medication records treats such a record, on
    the days it covers (criteria/exposure.py, as for any record), as one that could be the drug
    it looks for, and never decides on it: a rule that would pass (or fail) on the absence of
    that drug in its window gives `unknown` instead, naming the record and the Medication;
    it never makes a verdict `pass` or `fail` on its own. The rules: I6.anc's colony-stimulating
    factor before the count (measurement `invalid_after_medication`), E4's anti-infective taken
    on as_of (`suspect_if_medication_active`), I4's components (`therapy_history`: cited, never
    counted) and SLEDAI-2K's myelotoxic drug before a low count (a computed activity score that
    would pass only by counting that item: criteria/scores.py).
    """
    return med.unresolved is not None and not med.review


def unidentified_reason(terms: Terminology, valueset: str, med: MedicationExposure) -> str:
    """Why an `unidentified` record keeps a rule about `valueset` from deciding."""
    shown = f", shown as '{med.text}'" if med.text else ""
    return (
        f"possible {title(terms, valueset)}: {med.reference} names {med.unresolved}{shown}; "
        "the drug is unknown: review"
    )
