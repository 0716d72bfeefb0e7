"""`diagnosis_required` and `diagnosis_excludes`: criteria decided by the problem list.

Policy: an exclusion defined by a diagnosis passes when the record holds no such diagnosis
("no record of ..."), unless records of that type could not be read; an unconfirmed
(provisional, differential) diagnosis is `unknown`, never `fail`. A required diagnosis that
is recorded only as unconfirmed, or only by a related code that does not establish it, is
`unknown`.
"""

from __future__ import annotations

from datetime import timedelta

from service.criteria.common import (
    Context,
    Findings,
    add_months,
    and_more,
    decide,
    diagnosis_evidence,
    medication_evidence,
    title,
    unreadable,
)
from service.criteria.labs import test_state
from service.criteria.model import DiagnosisExcludesRule, DiagnosisRequiredRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import Diagnosis, PatientFacts

UNCONFIRMED = frozenset({"unconfirmed", "provisional", "differential"})


def _known(diagnoses: list[Diagnosis], ctx: Context) -> list[Diagnosis]:
    """Diagnoses known on `as_of` (not first recorded later)."""
    return [
        dx
        for dx in diagnoses
        if (dx.onset or dx.recorded) is None or (dx.onset or dx.recorded) <= ctx.as_of  # type: ignore[operator]
    ]


# ---------------------------------------------------------------- diagnosis_required
def evaluate_diagnosis_required(
    rule: DiagnosisRequiredRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    name = title(ctx.terms, rule.valueset)
    found = Findings()
    for dx in _known(facts.diagnoses_for(rule.valueset), ctx):
        if dx.verification_status in UNCONFIRMED:
            found.doubt(
                f"{name} recorded only as {dx.verification_status}",
                diagnosis_evidence(dx, note=f"verification: {dx.verification_status}"),
            )
        else:
            found.decisive.append(diagnosis_evidence(dx, rule=f"in value set {rule.valueset}"))
    if rule.uncertain_valueset:
        for dx in _known(facts.diagnoses_for(rule.uncertain_valueset), ctx):
            found.doubt(
                f"{title(ctx.terms, rule.uncertain_valueset)} on record, "
                f"which does not establish {name}",
                diagnosis_evidence(dx, rule=f"in value set {rule.uncertain_valueset}"),
            )
    concerned = [rule.valueset, *filter(None, [rule.uncertain_valueset])]
    return decide(
        found,
        decisive_verdict="pass",
        decided=lambda first: f"{name} on record ({first.reference})",
        problem=unreadable(facts, "Condition", concepts=concerned),
        nothing=f"no {name} found",
        only_shown=f"no {name} diagnosis on record",
        absent=f"no {name} diagnosis on record",
    )


# ---------------------------------------------------------------- diagnosis_excludes
def evaluate_diagnosis_excludes(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    names = " or ".join(title(ctx.terms, v) for v in rule.valuesets)
    found = Findings()
    _judge_diagnoses(rule, facts, ctx, found)
    _judge_procedures(rule, facts, ctx, found)
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
        only_shown=f"only excepted {names} on record",
        absent=f"no record of {names}",
    )


def _judge_diagnoses(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    seen: set[str] = set()
    for valueset in rule.valuesets:
        for dx in _known(facts.diagnoses_for(valueset), ctx):
            if dx.reference in seen:
                continue
            seen.add(dx.reference)
            outcome = _judge_diagnosis(rule, dx, ctx)
            if outcome is None:
                continue
            kind, note = outcome
            evidence = diagnosis_evidence(dx, note=note)
            if kind == "fail":
                found.decisive.append(evidence)
            elif kind == "unknown":
                found.doubt(note, evidence)
            else:
                found.shown.append(evidence)


def _judge_diagnosis(
    rule: DiagnosisExcludesRule, dx: Diagnosis, ctx: Context
) -> tuple[str, str] | None:
    """('fail'|'unknown'|'pass', note) for one matching diagnosis, or None if it does not count."""
    if rule.active_only and not dx.active:
        return None
    if rule.onset_within_days is not None:
        began = dx.onset or dx.recorded
        if began is None:
            return "unknown", f"{dx.reference}: active, onset date not recorded"
        if began < ctx.as_of - timedelta(days=rule.onset_within_days):
            return None
    for exception in rule.exceptions:
        if exception.valueset in dx.concepts:
            years = exception.disease_free_years_more_than
            if dx.abatement is None:
                return (
                    "unknown",
                    f"{dx.reference}: excepted only if disease-free > {years} years; "
                    "no end date recorded",
                )
            if dx.abatement < add_months(ctx.as_of, -12 * years):
                return "pass", f"excepted: disease-free since {dx.abatement} (> {years} years)"
            return (
                "fail",
                f"excepted type, but disease-free only since {dx.abatement} (not > {years} years)",
            )
    if dx.verification_status in UNCONFIRMED:
        return "unknown", f"{dx.reference}: recorded as {dx.verification_status}; confirm"
    return "fail", "matches the exclusion"


def _judge_procedures(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    if rule.procedures is None:
        return
    since = ctx.as_of - timedelta(days=rule.procedures.within_days)
    for proc in facts.procedures:
        if (
            rule.procedures.valueset in proc.concepts
            and proc.performed
            and since <= proc.performed <= ctx.as_of
        ):
            found.decisive.append(
                Evidence(
                    reference=proc.reference,
                    code=proc.codes[0] if proc.codes else None,
                    date=proc.performed,
                    note=f"{title(ctx.terms, rule.procedures.valueset)} "
                    f"within {rule.procedures.within_days} days",
                )
            )


def _judge_tests(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    if rule.positive_tests is None:
        return
    for spec in rule.positive_tests.tests.values():
        state, reason, shown = test_state(spec, facts, ctx, rule.positive_tests.lookback_days)
        if state == "positive":
            found.decisive.extend(shown)
        elif state == "unknown" and any(e.note is None for e in shown):
            # a result in the window that reads neither way (e.g. hCG 5-25 mIU/mL)
            for evidence in shown:
                found.doubt(reason, evidence)


def _judge_suspect_medications(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context, found: Findings
) -> None:
    """A medication that suggests the condition (an anti-infective for an infection) running
    on `as_of` makes the exclusion `unknown` when no diagnosis decided it."""
    if not rule.suspect_if_medication_active:
        return
    for med in facts.medications_for(rule.suspect_if_medication_active):
        end = med.end or (ctx.as_of if med.status in ("active", "on-hold") else med.start)
        if med.start is not None and end is not None and med.start <= ctx.as_of <= end:
            note = f"active {title(ctx.terms, rule.suspect_if_medication_active)} on {ctx.as_of}"
            found.doubt(note, medication_evidence(med, note=note))


def _types_read(rule: DiagnosisExcludesRule) -> list[str]:
    types = ["Condition"] + (["Procedure"] if rule.procedures else [])
    return types + (["Observation"] if rule.positive_tests else [])


def _concerned(rule: DiagnosisExcludesRule) -> list[str]:
    """The value sets an unreadable record would have to concern to withhold a pass."""
    return [
        *rule.valuesets,
        *(e.valueset for e in rule.exceptions),
        *([rule.procedures.valueset] if rule.procedures else []),
        *(t.lab for t in (rule.positive_tests.tests.values() if rule.positive_tests else [])),
    ]
