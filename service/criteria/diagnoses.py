"""`diagnosis_required` and `diagnosis_excludes`: criteria decided by the problem list.

Everything is judged as of `as_of`: a diagnosis first recorded (or with onset) later did not
exist yet; one whose abatement date is after `as_of` was active then (`Diagnosis.active_on`).

- An exclusion passes when the record holds no such diagnosis ("no record of ..."), unless
  records of that type could not be read; an unconfirmed (provisional, differential) diagnosis is
  `unknown`, never `fail`.
- Unmapped is not absent: a diagnosis no value set knows by code, whose text matches the value
  set's review terms (`Diagnosis.review`), is `unknown` where absence would pass: "possible
  <title>: '<display>' (<system> <code>, not in the value set): review". For a required
  diagnosis, it turns `fail` into `unknown`.
- A required diagnosis recorded only as unconfirmed, or only by a related code that does not
  establish it (`uncertain_valueset`), is `unknown`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Literal

from service.criteria.common import (
    Context,
    Findings,
    add_months,
    and_more,
    decide,
    diagnosis_evidence,
    medication_evidence,
    review_reason,
    title,
    unidentified,
    unidentified_reason,
    unreadable,
)
from service.criteria.exposure import exposure, undated
from service.criteria.model import (
    DiagnosisExcludesRule,
    DiagnosisRequiredRule,
    DiseaseFreeException,
)
from service.criteria.scores import classification_verdict
from service.criteria.test_results import test_state
from service.criteria.verdict import Evidence, Verdict
from service.facts import Diagnosis, MedicationExposure, PatientFacts, written

MEDICATION_TYPES = (
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
)
Outcome = tuple[Literal["fail", "unknown", "pass"], str]


def _counted(dx: Diagnosis, active_only: bool, day: date) -> bool:
    """A record the criterion looks at on `day`: active then, or (history) known by then."""
    return dx.active_on(day) if active_only else dx.known_on(day)


def _review_doubts(
    facts: PatientFacts, valuesets: list[str], active_only: bool, ctx: Context, found: Findings
) -> None:
    """Diagnoses no value set knows whose text suggests one of `valuesets`: doubts."""
    for dx in facts.diagnoses:
        hits = [v for v in valuesets if v in dx.review]
        if hits and _counted(dx, active_only, ctx.as_of):
            reason = review_reason(ctx.terms, hits[0], dx.codes, dx.text)
            found.doubt(reason, diagnosis_evidence(dx, note=reason))


# ---------------------------------------------------------------- diagnosis_required
def evaluate_diagnosis_required(
    rule: DiagnosisRequiredRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    name = title(ctx.terms, rule.valueset)
    found = Findings()
    for dx in facts.diagnoses_for(rule.valueset):
        if not dx.known_on(ctx.as_of):
            continue
        if unsure := dx.unsure_on(ctx.as_of, False):
            found.doubt(f"{dx.reference}: {unsure}", diagnosis_evidence(dx, note=unsure))
        elif dx.uncertain:
            found.doubt(
                f"{name} recorded only as {dx.verification_status}",
                diagnosis_evidence(dx, note=f"verification: {dx.verification_status}"),
            )
        else:
            found.decisive.append(diagnosis_evidence(dx, rule=f"in value set {rule.valueset}"))
    if rule.uncertain_valueset:
        for dx in facts.diagnoses_for(rule.uncertain_valueset):
            if dx.known_on(ctx.as_of):
                found.doubt(
                    f"{title(ctx.terms, rule.uncertain_valueset)} on record, "
                    f"which does not establish {name}",
                    diagnosis_evidence(dx, rule=f"in value set {rule.uncertain_valueset}"),
                )
    concerned = [rule.valueset, *filter(None, [rule.uncertain_valueset])]
    _review_doubts(facts, concerned, False, ctx, found)
    verdict = decide(
        found,
        decisive_verdict="pass",
        decided=lambda first: f"{name} on record ({first.reference})",
        problem=unreadable(facts, "Condition", concepts=concerned),
        nothing=f"no {name} found",
        only_shown=f"no {name} diagnosis on record",
        absent=f"no {name} diagnosis on record",
    )
    if rule.classification is not None:
        return classification_verdict(verdict, rule.classification, facts, ctx)
    return verdict


# ---------------------------------------------------------------- diagnosis_excludes
def evaluate_diagnosis_excludes(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    names = " or ".join(title(ctx.terms, v) for v in rule.valuesets)
    found = Findings()
    _judge_diagnoses(rule, facts, ctx, found)
    _review_doubts(facts, _searched(rule), rule.active_only, ctx, found)
    _judge_procedures(rule, facts, ctx, found)
    _review_procedures(rule, facts, ctx, found)
    _judge_tests(rule, facts, ctx, found)
    if not found.decisive:
        _judge_suspect_medications(rule, facts, ctx, found)
    return decide(
        found,
        decided=lambda first: and_more(
            f"{names} on record: {first.reference}", len(found.decisive)
        ),
        problem=unreadable(facts, *_types_read(rule), concepts=_concerned(rule)),
        nothing=f"no {names} found",
        only_shown=f"no {names} that excludes (the records shown do not count)",
        absent=f"no record of {names}",
    )


def _judge_diagnoses(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    seen: set[str] = set()
    for valueset in _searched(rule):
        for dx in facts.diagnoses_for(valueset):
            if dx.reference in seen or not _counted(dx, rule.active_only, ctx.as_of):
                continue
            seen.add(dx.reference)
            outcome = _judge_diagnosis(rule, dx, ctx)
            if outcome is None:
                continue
            kind, note = outcome
            if kind == "fail" and (unsure := dx.unsure_on(ctx.as_of, rule.active_only)):
                # A partial date ("2026-11") that may fall either side of `as_of`.
                kind, note = "unknown", f"{dx.reference}: {unsure}; confirm"
            evidence = diagnosis_evidence(dx, note=note)
            if kind == "fail":
                found.decisive.append(evidence)
            elif kind == "unknown":
                found.doubt(note, evidence)
            else:
                found.shown.append(evidence)


def _searched(rule: DiagnosisExcludesRule) -> list[str]:
    """The rule's value sets, then those of its exceptions and of `at_most_unknown`: a record
    coded only in an excepted or limited set (a subset by design) is still judged, never missed."""
    return _per_rule(rule, "searched", lambda: _searched_now(rule))


def _searched_now(rule: DiagnosisExcludesRule) -> list[str]:
    extra = [e.valueset for e in rule.exceptions] + rule.at_most_unknown
    return list(dict.fromkeys([*rule.valuesets, *extra]))


# Derived from a rule alone, asked for every patient: worked out once per rule object (rules
# are frozen and live as long as their trial; the entry keeps the rule, so its id stays its own).
_RULE_CACHE: dict[tuple[int, str], tuple[DiagnosisExcludesRule, list[str]]] = {}


def _per_rule(
    rule: DiagnosisExcludesRule, what: str, compute: Callable[[], list[str]]
) -> list[str]:
    key = (id(rule), what)
    found = _RULE_CACHE.get(key)
    if found is None or found[0] is not rule:
        found = _RULE_CACHE[key] = (rule, compute())
    return found[1]


def _judge_diagnosis(rule: DiagnosisExcludesRule, dx: Diagnosis, ctx: Context) -> Outcome | None:
    """('fail'|'unknown'|'pass', note) for one counted diagnosis, or None if it does not count.

    In order: a stale record nobody closed, the onset window, the exceptions, the verification
    status, a clinical status that could not be read (for an active-only rule), value sets that
    never exclude on their own (at most `unknown`).
    """
    outcome = _judge_stale(rule, dx, ctx) or _judge_onset(rule, dx, ctx)
    if outcome is not None:
        return outcome
    for exception in rule.exceptions:
        if exception.valueset in dx.concepts:
            return _judge_exception(exception, dx, ctx)
    if dx.uncertain:
        return "unknown", f"{dx.reference}: recorded as {dx.verification_status}; confirm"
    if rule.active_only and dx.status_unread and dx.abatement is None and not dx.abated:
        return (
            "unknown",
            f"{dx.reference}: clinical status {dx.clinical_status}; confirm whether it is current",
        )
    limited = [v for v in rule.at_most_unknown if v in dx.concepts]
    if limited:
        return (
            "unknown",
            f"{dx.reference}: {title(ctx.terms, limited[0])} does not exclude by itself; "
            "review (an uncontrolled or systemic infection, a dialysis patient?)",
        )
    return "fail", "matches the exclusion"


def _judge_stale(rule: DiagnosisExcludesRule, dx: Diagnosis, ctx: Context) -> Outcome | None:
    """A record that should have ended by now (a pregnancy, lactation) but was never closed.

    No status and no end date: counted only for `unstated_status_counts_days` after its onset
    (or recorded date); later it is shown, not counted; with no date at all, `unknown`. Recorded
    active for longer than that: `unknown` (recorded active with no date: it counts).
    """
    days = rule.unstated_status_counts_days
    if days is None or dx.abatement is not None or not rule.active_only:
        return None
    began, last = dx.began()
    if began is None:
        if dx.clinical_status is None:
            return (
                "unknown",
                f"{dx.reference}: no status and no date recorded; confirm it is current",
            )
        return None  # recorded active, with nothing to say since when: it counts
    if began + timedelta(days=days) >= ctx.as_of:
        return None
    if last is not None:
        shown = written(began, last)
        if last + timedelta(days=days) >= ctx.as_of:
            # "2026-08": some of its days are within `days` of `as_of`, some are not.
            return (
                "unknown",
                f"{dx.reference}: {dx.clinical_status or 'no status'} since {shown}, which may "
                f"be more or fewer than {days} days before {ctx.as_of}; confirm it is current",
            )
        began_text = shown
    else:
        began_text = str(began)
    if dx.clinical_status is None:
        return (
            "pass",
            f"no status and no end date; counted for {days} days after {began_text} only: "
            "not current",
        )
    return (
        "unknown",
        f"{dx.reference}: recorded {dx.clinical_status} since {began_text}, longer than "
        f"{days} days; "
        "confirm it is current",
    )


def _judge_onset(rule: DiagnosisExcludesRule, dx: Diagnosis, ctx: Context) -> Outcome | None:
    """The onset window of an active-only exclusion (a recent infection).

    An active record older than the window is not dropped silently: `unknown` unless the record
    shows it resolved (then `_counted` already left it out).
    """
    if rule.onset_within_days is None:
        return None
    began, last = dx.began()
    if began is None:
        return "unknown", f"{dx.reference}: active, onset date not recorded"
    start = ctx.as_of - timedelta(days=rule.onset_within_days)
    if last is not None and began < start <= last:
        return (
            "unknown",
            f"{dx.reference}: onset {written(began, last)}, which may be before or within the "
            f"{rule.onset_within_days}-day window; confirm when it began and whether it is "
            "still active",
        )
    if began < start:
        return (
            "unknown",
            f"{dx.reference}: active since {written(began, last)} (before the "
            f"{rule.onset_within_days}-day window) and not recorded resolved; confirm whether "
            "it is still active",
        )
    return None


def _judge_exception(exception: DiseaseFreeException, dx: Diagnosis, ctx: Context) -> Outcome:
    """An excepted kind (non-melanoma skin cancer, a CNS infection long over): excepted only when
    over for more than N years before `as_of`."""
    years = exception.disease_free_years_more_than
    over = dx.abatement if dx.abatement is not None and dx.abatement <= ctx.as_of else None
    last = dx.abatement_latest
    if over is not None and last is not None:
        return _partial_exception(exception, dx, ctx, over, last)
    if over is None:
        if not dx.active_on(ctx.as_of) or dx.status_unread:
            how = "abated" if dx.abated else dx.clinical_status
            return (
                "unknown",
                f"{dx.reference}: excepted only if over for > {years} years; recorded "
                f"{how} without an end date",
            )
        if exception.when_unresolved == "fail":
            return _unresolved(dx, years, ctx)
        return (
            "unknown",
            f"{dx.reference}: excepted only if disease-free > {years} years; no end date recorded",
        )
    if over < add_months(ctx.as_of, -12 * years):
        return "pass", f"excepted: disease-free since {over} (> {years} years)"
    return "fail", f"excepted type, but disease-free only since {over} (not > {years} years)"


def _partial_exception(
    exception: DiseaseFreeException, dx: Diagnosis, ctx: Context, first: date, last: date
) -> Outcome:
    """`_judge_exception` for an abatement written as a year or month ("2021"): excepted only
    when every day it may be is more than N years before `as_of`; not excepted when none is."""
    years = exception.disease_free_years_more_than
    cutoff = add_months(ctx.as_of, -12 * years)
    shown = written(first, last)
    if last < cutoff:
        return "pass", f"excepted: disease-free since {shown} (> {years} years)"
    if first >= cutoff and last <= ctx.as_of:
        return "fail", f"excepted type, but disease-free only since {shown} (not > {years} years)"
    if first >= cutoff and exception.when_unresolved == "fail":
        return "fail", f"abated in {shown}: not over for > {years} years on {ctx.as_of}"
    return (
        "unknown",
        f"{dx.reference}: abated in {shown}: disease-free for more than {years} years cannot "
        "be confirmed",
    )


def _unresolved(dx: Diagnosis, years: int, ctx: Context) -> Outcome:
    """An excepted kind recorded active with no end (`when_unresolved: fail`): present now,
    unless it began more than N years ago. Then it may have been over for more than N years
    (a concussion or meningitis of 2003 whose problem-list entry was never closed, as Synthea
    and many EHRs leave them): `unknown`, for review, never `fail` on a stale entry."""
    began = dx.onset or dx.recorded
    if began is not None and began < add_months(ctx.as_of, -12 * years):
        return (
            "unknown",
            f"{dx.reference}: recorded {dx.clinical_status} since {began} with no end date; "
            f"excepted if over for > {years} years, which it may be: confirm it is current",
        )
    return "fail", f"excepted only when over for > {years} years; not recorded over"


def _review_procedures(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    """A procedure that suggests the disease (`review_procedures`: a CABG for E6), by code or
    by its text, on record on or before as_of (or undated): `unknown` for review."""
    for proc in facts.procedures:
        hits = [v for v in rule.review_procedures if v in proc.concepts or v in proc.review]
        if not hits or (proc.performed is not None and proc.performed > ctx.as_of):
            continue
        when = f" on {written(proc.performed, proc.performed_latest)}" if proc.performed else ""
        note = (
            f"{title(ctx.terms, hits[0])}{when}: not an exclusion by itself; review whether it "
            f"was for {title(ctx.terms, rule.valuesets[0]).lower()}"
        )
        code = proc.codes[0] if proc.codes else None
        found.doubt(f"{proc.reference}: {note}", Evidence(proc.reference, code, note=note))


def _judge_procedures(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    """A procedure of the rule's value set in the window fails; one on an unrecorded date, or
    one no value set knows whose text suggests it (review terms), is a doubt."""
    if rule.procedures is None:
        return
    valueset, days = rule.procedures.valueset, rule.procedures.within_days
    name = title(ctx.terms, valueset)
    since = ctx.as_of - timedelta(days=days)
    for proc in facts.procedures:
        coded, suggested = valueset in proc.concepts, valueset in proc.review
        last = proc.performed_latest or proc.performed
        if not (coded or suggested) or (
            proc.performed and last and (last < since or proc.performed > ctx.as_of)
        ):
            continue
        code = proc.codes[0] if proc.codes else None
        if (
            proc.performed
            and proc.performed_latest
            and not (since <= proc.performed and proc.performed_latest <= ctx.as_of)
        ):
            # "2026-08": some of its days are in the window, some are not.
            shown = written(proc.performed, proc.performed_latest)
            note = f"{name} dated {shown}: within {days} days before {ctx.as_of}?"
            found.doubt(f"{proc.reference}: {note}", Evidence(proc.reference, code, note=note))
        elif suggested:
            reason = review_reason(ctx.terms, valueset, proc.codes, proc.text)
            when = proc.performed if proc.performed_latest is None else None
            found.doubt(reason, Evidence(proc.reference, code, date=when, note=reason))
        elif proc.performed is None:
            note = f"{name} on an unrecorded date: within {days} days?"
            found.doubt(f"{proc.reference}: {note}", Evidence(proc.reference, code, note=note))
        elif proc.performed_latest is not None:  # a month wholly inside the window
            shown = written(proc.performed, proc.performed_latest)
            note = f"{name} within {days} days (dated {shown})"
            found.decisive.append(Evidence(proc.reference, code, note=note))
        else:
            note = f"{name} within {days} days"
            found.decisive.append(Evidence(proc.reference, code, date=proc.performed, note=note))


def _judge_tests(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    """Positive tests in the window fail; one that reads neither way is a doubt; a negative one
    is shown (a "not pregnant" answer), never a pass by itself.

    The tests are read apart (each by its latest result), so a positive one followed, the same
    day or later, by a negative result of another (a positive urine test, then a serum hCG
    below 5 mIU/mL) would still fail although within one test the later negative decides: it is
    a doubt instead, for review. A test marked `positive_suggests_only` (eGFR < 15 for
    end-stage renal failure) is a doubt when positive, and never outweighs another test.
    """
    if rule.positive_tests is None:
        return
    specs = list(rule.positive_tests.tests.values())
    states = [test_state(spec, facts, ctx, rule.positive_tests.lookback_days) for spec in specs]
    negative_days = [
        e.date
        for spec, (state, _, shown) in zip(specs, states, strict=True)
        if state == "negative" and not spec.positive_suggests_only
        for e in shown
    ]
    last_negative = max(filter(None, negative_days), default=None)
    for spec, (state, reason, shown) in zip(specs, states, strict=True):
        positive_day = max(filter(None, (e.date for e in shown)), default=None)
        if state == "positive" and last_negative and positive_day and last_negative >= positive_day:
            for evidence in shown:
                found.doubt(
                    f"{reason}, but another test read negative on {last_negative}", evidence
                )
        elif state == "positive" and spec.positive_suggests_only:
            suggested = title(ctx.terms, rule.valuesets[0])
            for evidence in shown:
                found.doubt(f"{reason}: suggests {suggested}, does not decide alone", evidence)
        elif state == "positive":
            found.decisive.extend(shown)
        elif state == "negative":
            found.shown.extend(shown)
        elif state == "unknown" and any(e.note is None for e in shown):
            # a result in the window that reads neither way (e.g. hCG 5-25 mIU/mL)
            for evidence in shown:
                found.doubt(reason, evidence)


def _judge_suspect_medications(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    """A medication that suggests the condition (a systemic anti-infective for an infection)
    taken on `as_of` (criteria/exposure.py decides which days a record covers) makes the
    exclusion `unknown` when no diagnosis decided it; so does a medication no value set knows
    whose text suggests one, and one whose drug is unknown (`unidentified`)."""
    valueset = rule.suspect_if_medication_active
    if not valueset:
        return
    name = title(ctx.terms, valueset)
    for med in facts.medications_for(valueset):
        if (period := _taken_on(med, ctx)) is not None:
            note = f"{name} taken on {ctx.as_of} ({period})"
            found.doubt(note, medication_evidence(med, note=note))
    for med in facts.medications:
        if valueset in med.review and _taken_on(med, ctx) is not None:
            reason = review_reason(ctx.terms, valueset, med.codes, med.text)
            found.doubt(reason, medication_evidence(med, note=reason))
    for med in facts.medications:
        if unidentified(med) and (period := _taken_on(med, ctx)) is not None:
            reason = f"{unidentified_reason(ctx.terms, valueset, med)} (taken on {ctx.as_of})"
            found.doubt(reason, medication_evidence(med, note=f"{reason}; {period}"))


def _taken_on(med: MedicationExposure, ctx: Context) -> str | None:
    """How the record covers `as_of` (for the evidence), or None when it does not. A record
    still taken (active, on hold) with no date may cover it (exposure.py: `undated`)."""
    if undated(med, ctx.as_of, running_only=True):
        return f"{med.status}, no date recorded: may be taken on {ctx.as_of}"
    period = exposure(med, ctx.as_of, ctx.terms)
    if period is None or not period.start <= ctx.as_of <= period.end:
        return None
    return f"{period.start} to {period.end}: {period.basis}"


def _types_read(rule: DiagnosisExcludesRule) -> list[str]:
    types = ["Condition"] + (["Procedure"] if rule.procedures or rule.review_procedures else [])
    types += ["Observation"] if rule.positive_tests else []
    return types + (list(MEDICATION_TYPES) if rule.suspect_if_medication_active else [])


def _concerned(rule: DiagnosisExcludesRule) -> list[str]:
    """The value sets an unreadable record would have to concern to withhold a pass."""
    return _per_rule(rule, "concerned", lambda: _concerned_now(rule))


def _concerned_now(rule: DiagnosisExcludesRule) -> list[str]:
    return [
        *_searched(rule),
        *([rule.procedures.valueset] if rule.procedures else []),
        *(t.lab for t in (rule.positive_tests.tests.values() if rule.positive_tests else [])),
        *filter(None, [rule.suspect_if_medication_active]),
    ]
