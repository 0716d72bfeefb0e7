"""Rules read from the patient's history: diagnoses, allergies, study participation, age.

Policy: an exclusion defined by a diagnosis passes when the record holds no such diagnosis
("no record of ..."), unless records of that type could not be read; an unconfirmed
(provisional, differential) diagnosis is `unknown`, never `fail`.
"""

from __future__ import annotations

from datetime import timedelta

from service.criteria.common import (
    Context,
    add_months,
    age_range,
    diagnosis_evidence,
    medication_evidence,
    title,
    unreadable,
)
from service.criteria.model import (
    AgeRule,
    AllergyRule,
    DiagnosisExcludesRule,
    DiagnosisRequiredRule,
    StudyParticipationRule,
)
from service.criteria.test_results import test_state
from service.criteria.verdict import Evidence, Verdict
from service.facts import Diagnosis, PatientFacts

UNCONFIRMED = frozenset({"unconfirmed", "provisional", "differential"})
MEDICATION_SYSTEMS = frozenset(
    {"http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.whocc.no/atc"}
)


def _known(diagnoses: list[Diagnosis], ctx: Context) -> list[Diagnosis]:
    """Diagnoses known on `as_of` (not first recorded later)."""
    return [
        dx
        for dx in diagnoses
        if (dx.onset or dx.recorded) is None or (dx.onset or dx.recorded) <= ctx.as_of  # type: ignore[operator]
    ]


def evaluate_diagnosis_required(
    rule: DiagnosisRequiredRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    name = title(ctx.terms, rule.valueset)
    found = _known(facts.diagnoses_for(rule.valueset), ctx)
    confirmed = [dx for dx in found if dx.verification_status not in UNCONFIRMED]
    if confirmed:
        evidence = tuple(
            diagnosis_evidence(dx, rule=f"in value set {rule.valueset}") for dx in confirmed
        )
        return Verdict("pass", f"{name} on record ({confirmed[0].reference})", evidence)
    if found:
        evidence = tuple(
            diagnosis_evidence(dx, note=f"verification: {dx.verification_status}") for dx in found
        )
        return Verdict(
            "unknown", f"{name} recorded only as {found[0].verification_status}", evidence
        )
    if rule.uncertain_valueset:
        uncertain = _known(facts.diagnoses_for(rule.uncertain_valueset), ctx)
        if uncertain:
            evidence = tuple(
                diagnosis_evidence(dx, rule=f"in value set {rule.uncertain_valueset}")
                for dx in uncertain
            )
            return Verdict(
                "unknown",
                f"{title(ctx.terms, rule.uncertain_valueset)} on record, "
                f"which does not establish {name}",
                evidence,
            )
    problem = unreadable(
        facts, "Condition", concepts=[rule.valueset, *filter(None, [rule.uncertain_valueset])]
    )
    if problem:
        return Verdict("unknown", f"no {name} found, but {problem}")
    return Verdict("fail", f"no {name} diagnosis on record")


def evaluate_diagnosis_excludes(
    rule: DiagnosisExcludesRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    names = " or ".join(title(ctx.terms, v) for v in rule.valuesets)
    fails: list[Evidence] = []
    doubts: list[tuple[str, Evidence]] = []
    cleared: list[Evidence] = []
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
                fails.append(evidence)
            elif kind == "unknown":
                doubts.append((note, evidence))
            else:
                cleared.append(evidence)
    if rule.procedures is not None:
        since = ctx.as_of - timedelta(days=rule.procedures.within_days)
        for proc in facts.procedures:
            if (
                rule.procedures.valueset in proc.concepts
                and proc.performed
                and since <= proc.performed <= ctx.as_of
            ):
                fails.append(
                    Evidence(
                        reference=proc.reference,
                        code=proc.codes[0] if proc.codes else None,
                        date=proc.performed,
                        note=f"{title(ctx.terms, rule.procedures.valueset)} "
                        f"within {rule.procedures.within_days} days",
                    )
                )
    if rule.positive_tests is not None:
        for spec in rule.positive_tests.tests.values():
            state, reason, shown = test_state(spec, facts, ctx, rule.positive_tests.lookback_days)
            if state == "positive":
                fails.extend(shown)
            elif state == "unknown" and any(e.note is None for e in shown):
                # a result in the window that reads neither way (e.g. hCG 5-25 mIU/mL)
                doubts.extend((reason, e) for e in shown)
    if fails:
        return Verdict(
            "fail",
            f"{names} on record: {fails[0].reference}"
            + (f" and {len(fails) - 1} more" if len(fails) > 1 else ""),
            tuple(fails + [e for _, e in doubts] + cleared),
        )
    if rule.suspect_if_medication_active:
        for med in facts.medications_for(rule.suspect_if_medication_active):
            end = med.end or (ctx.as_of if med.status in ("active", "on-hold") else med.start)
            if med.start is not None and end is not None and med.start <= ctx.as_of <= end:
                note = (
                    f"active {title(ctx.terms, rule.suspect_if_medication_active)} on {ctx.as_of}"
                )
                doubts.append((note, medication_evidence(med, note=note)))
    if doubts:
        return Verdict("unknown", doubts[0][0], tuple(e for _, e in doubts) + tuple(cleared))
    types = ["Condition"] + (["Procedure"] if rule.procedures else [])
    types += ["Observation"] if rule.positive_tests else []
    concerned = [
        *rule.valuesets,
        *(e.valueset for e in rule.exceptions),
        *([rule.procedures.valueset] if rule.procedures else []),
        *(t.lab for t in (rule.positive_tests.tests.values() if rule.positive_tests else [])),
    ]
    problem = unreadable(facts, *types, concepts=concerned)
    if problem:
        return Verdict("unknown", f"no {names} found, but {problem}", tuple(cleared))
    if cleared:
        return Verdict("pass", f"only excepted {names} on record", tuple(cleared))
    return Verdict("pass", f"no record of {names}")


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


def evaluate_allergy(rule: AllergyRule, facts: PatientFacts, ctx: Context) -> Verdict:
    severe: list[Evidence] = []
    unclear: list[Evidence] = []
    mild: list[Evidence] = []
    for allergy in facts.allergies:
        if allergy.negated:
            continue
        is_drug = rule.category in allergy.category or any(
            c.system in MEDICATION_SYSTEMS for c in allergy.codes
        )
        if not is_drug:
            continue
        evidence = Evidence(
            reference=allergy.reference,
            code=allergy.codes[0] if allergy.codes else None,
            date=allergy.recorded,
            value=allergy.criticality,
            rule=f"criticality {allergy.criticality or 'not recorded'}; reaction severity "
            f"{'/'.join(sorted(allergy.severities)) or 'not recorded'}",
        )
        if (
            allergy.criticality == "high"
            or "severe" in allergy.severities
            or rule.severe_manifestations in allergy.manifestations
        ):
            severe.append(evidence)
        elif allergy.criticality == "low" or allergy.severities & {"mild", "moderate"}:
            mild.append(evidence)
        else:
            unclear.append(evidence)
    if severe:
        return Verdict(
            "fail",
            f"severe drug allergy on record ({severe[0].reference})",
            tuple(severe + unclear + mild),
        )
    if unclear:
        return Verdict(
            "unknown",
            f"drug allergy of unrecorded severity ({unclear[0].reference})",
            tuple(unclear + mild),
        )
    problem = unreadable(facts, "AllergyIntolerance")
    if problem:
        return Verdict("unknown", f"no severe drug allergy found, but {problem}", tuple(mild))
    if mild:
        return Verdict("pass", "only non-severe drug allergies on record", tuple(mild))
    return Verdict("pass", "no record of drug allergy")


def evaluate_study_participation(
    rule: StudyParticipationRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    since = add_months(ctx.as_of, -rule.within_months)
    recent: list[Evidence] = []
    undated: list[Evidence] = []
    past: list[Evidence] = []
    for study in facts.studies:
        if ctx.trial_id in study.study or (study.start is not None and study.start > ctx.as_of):
            continue
        ongoing = study.end is None and study.status not in ("off-study", "withdrawn")
        evidence = Evidence(
            reference=study.reference,
            value=study.study,
            date=study.start,
            note=f"status {study.status}, ended {study.end or 'not recorded'}",
        )
        if ongoing or (study.end is not None and study.end >= since):
            recent.append(evidence)
        elif study.end is None and study.start is not None and study.start >= since:
            recent.append(evidence)  # off study now, but it started inside the window
        elif study.end is None:
            # Off study on an unrecorded date: it may or may not have been within the window.
            undated.append(
                Evidence(
                    reference=study.reference,
                    value=study.study,
                    date=study.start,
                    note="end date not recorded",
                )
            )
        else:
            past.append(evidence)
    if recent:
        return Verdict(
            "fail",
            f"in another study within {rule.within_months} months: {recent[0].value}",
            tuple(recent + undated + past),
        )
    if undated:
        return Verdict(
            "unknown",
            f"another study ended on an unrecorded date: {undated[0].value}",
            tuple(undated + past),
        )
    problem = unreadable(facts, "ResearchSubject")
    if problem:
        return Verdict("unknown", f"no recent study found, but {problem}", tuple(past))
    if past:
        return Verdict("pass", f"studies on record ended before {since}", tuple(past))
    return Verdict("pass", "no record of participation in another clinical trial")


def evaluate_age(rule: AgeRule, facts: PatientFacts, ctx: Context) -> Verdict:
    ages = age_range(facts.demographics, ctx.as_of)
    if ages is None or facts.demographics is None:
        return Verdict("unknown", "date of birth not recorded")
    youngest, oldest = ages
    evidence = (
        Evidence(
            reference=facts.demographics.reference,
            value=str(facts.demographics.birth_date),
            date=ctx.as_of,
            rule=f"age {_ages(youngest, oldest)} at {ctx.as_of}, "
            f"allowed {rule.min_years}-{rule.max_years}",
        ),
    )
    shown = _ages(youngest, oldest)
    if rule.min_years <= youngest and oldest <= rule.max_years:
        return Verdict(
            "pass",
            f"age {shown} at {ctx.as_of} is within {rule.min_years}-{rule.max_years}",
            evidence,
        )
    if oldest < rule.min_years or youngest > rule.max_years:
        return Verdict(
            "fail",
            f"age {shown} at {ctx.as_of} is outside {rule.min_years}-{rule.max_years}",
            evidence,
        )
    return Verdict(
        "unknown",
        f"partial date of birth: age {shown} straddles the {rule.min_years}-{rule.max_years} limit",
        evidence,
    )


def _ages(youngest: int, oldest: int) -> str:
    return str(youngest) if youngest == oldest else f"{youngest}-{oldest}"
