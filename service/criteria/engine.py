"""evaluate(trial, facts, as_of) -> PatientResult. Pure: the same inputs give the same result.

The engine applies the rules of judgement common to every criterion:
- `applies_to` a sex the patient is recorded not to have -> `not_applicable`;
- a `manual` criterion never passes from EHR data (a pass becomes `unknown`, with what the
  record showed), but it can fail when the record shows the problem;
- a rule that raises is a bug, not a verdict: the criterion becomes `unknown` and the
  error is logged with the patient reference only.

A patient deceased on or before `as_of` (or recorded deceased without a date) is never a
candidate: status `ineligible` with `status_reason` saying so, apart from the criteria, which
are still evaluated and shown; ages stop at death. A death after `as_of` does not count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

from service.criteria.age import evaluate_age
from service.criteria.allergy import evaluate_allergy
from service.criteria.common import Context, age_range
from service.criteria.creatinine_clearance import evaluate_creatinine_clearance
from service.criteria.diagnoses import evaluate_diagnosis_excludes, evaluate_diagnosis_required
from service.criteria.graded_domains import evaluate_graded_domains
from service.criteria.measurement import evaluate_measurement
from service.criteria.model import Criterion, TrialDefinition
from service.criteria.study_participation import evaluate_study_participation
from service.criteria.test_results import evaluate_test_results
from service.criteria.therapy_history import evaluate_therapy_history
from service.criteria.verdict import (
    CriterionResult,
    PatientResult,
    PatientSummary,
    TrialRef,
    Verdict,
)
from service.facts import Demographics, PatientFacts, written
from service.ranking import rank_fields, result_next_step
from service.terminology import Terminology

__all__ = ["evaluate", "evaluate_criterion"]

log = logging.getLogger(__name__)

RULES: dict[str, Callable[[Any, PatientFacts, Context], Verdict]] = {
    "measurement": evaluate_measurement,
    "creatinine_clearance": evaluate_creatinine_clearance,
    "graded_domains": evaluate_graded_domains,
    "test_results": evaluate_test_results,
    "therapy_history": evaluate_therapy_history,
    "age": evaluate_age,
    "diagnosis_required": evaluate_diagnosis_required,
    "diagnosis_excludes": evaluate_diagnosis_excludes,
    "allergy": evaluate_allergy,
    "study_participation": evaluate_study_participation,
    "manual": lambda _rule, _facts, _ctx: Verdict("unknown", "decided at the screening visit"),
}


def evaluate_criterion(criterion: Criterion, facts: PatientFacts, ctx: Context) -> CriterionResult:
    sex = facts.demographics.sex if facts.demographics else None
    if (
        criterion.applies_to is not None
        and sex in ("female", "male")
        and sex != criterion.applies_to.sex
    ):
        verdict = Verdict("not_applicable", f"applies to {criterion.applies_to.sex} patients only")
    else:
        try:
            verdict = RULES[criterion.rule.type](criterion.rule, facts, ctx)
        except Exception:
            log.exception("criterion %s failed for %s", criterion.id, facts.reference)
            verdict = Verdict("unknown", "could not be evaluated (internal error; reported)")
    if criterion.assessment == "manual" and verdict.verdict == "pass":
        verdict = Verdict(
            "unknown",
            f"confirmed only at the screening visit; the record shows: {verdict.reason}",
            verdict.evidence,
            verdict.score,
        )
    return CriterionResult(
        id=criterion.id,
        kind=criterion.kind,
        assessment=criterion.assessment,
        text=criterion.text,
        verdict=verdict.verdict,
        reason=verdict.reason,
        evidence=verdict.evidence,
        check=criterion.check if verdict.verdict == "unknown" else None,
        score=verdict.score,
    )


def deceased_reason(demographics: Demographics | None, as_of: date) -> str | None:
    """Why the patient is no candidate on `as_of` because of death, or None."""
    if demographics is None or not demographics.deceased:
        return None
    if demographics.deceased_date is None:
        return "deceased (Patient.deceasedBoolean; date of death not recorded): not a candidate"
    last = demographics.deceased_date_latest
    if last is not None and demographics.deceased_date <= as_of:
        # "2026": the day is not recorded. Like a death without a date, not a candidate, even
        # if the day may be after `as_of`; the date is shown as written, not as 1 January.
        when = written(demographics.deceased_date, last)
        maybe = f", possibly after {as_of}" if last > as_of else ""
        return (
            f"deceased in {when} (Patient.deceasedDateTime; day not recorded{maybe}): "
            "not a candidate"
        )
    if demographics.deceased_date <= as_of:
        return (
            f"deceased on {demographics.deceased_date} (Patient.deceasedDateTime): not a candidate"
        )
    return None


def evaluate(
    trial: TrialDefinition,
    facts: PatientFacts,
    as_of: date,
    terms: Terminology,
    *,
    mrn_type: str = "MR",
) -> PatientResult:
    """Every criterion of `trial` for one patient on `as_of`, with status, score and next steps.

    `mrn_type` is the identifier type code whose value is shown as the patient's `mrn`.
    """
    ctx = Context(
        as_of=as_of,
        terms=terms,
        trial_id=trial.id,
        default_lookback_days=trial.defaults.lookback_days,
    )
    results = [evaluate_criterion(criterion, facts, ctx) for criterion in trial.criteria]
    demographics = facts.demographics
    deceased = deceased_reason(demographics, as_of)
    status, score, next_steps = rank_fields(trial, results, deceased)
    ages = age_range(demographics, as_of)
    identifiers = demographics.identifiers if demographics else ()
    result = PatientResult(
        trial=TrialRef(trial.id, trial.version, terms.version),
        patient=PatientSummary(
            reference=facts.reference,
            age=ages[1] if ages and ages[0] == ages[1] else None,
            sex=demographics.sex if demographics else None,
            identifiers=identifiers,
            mrn=next((i.value for i in identifiers if i.type == mrn_type), None),
            deceased=deceased is not None,
            # a partial date of death ("2026") is in status_reason as written, not as a day
            deceased_date=demographics.deceased_date
            if deceased and demographics and demographics.deceased_date_latest is None
            else None,
            name=demographics.name if demographics else None,
        ),
        as_of=as_of,
        status=status,
        score=score,
        criteria=results,
        next_steps=next_steps,
        status_reason=deceased,
        problems=[f"{p.where}: {p.message}" if p.where else p.message for p in facts.problems],
    )
    result.next_step = result_next_step(result)
    return result
