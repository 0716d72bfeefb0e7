"""evaluate(trial, facts, as_of) -> PatientResult. Pure: the same inputs give the same result.

The engine applies the rules of judgement common to every criterion:
- `applies_to` a sex the patient is recorded not to have -> `not_applicable`;
- a `manual` criterion never passes from EHR data (a pass becomes `unknown`, with what the
  record showed), but it can fail when the record shows the problem;
- a rule that raises is a bug, not a verdict: the criterion becomes `unknown` and the
  error is logged with the patient reference only.
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
from service.facts import PatientFacts
from service.ranking import rank_fields
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
    )


def evaluate(
    trial: TrialDefinition, facts: PatientFacts, as_of: date, terms: Terminology
) -> PatientResult:
    """Every criterion of `trial` for one patient on `as_of`, with status, score and next steps."""
    ctx = Context(
        as_of=as_of,
        terms=terms,
        trial_id=trial.id,
        default_lookback_days=trial.defaults.lookback_days,
    )
    results = [evaluate_criterion(criterion, facts, ctx) for criterion in trial.criteria]
    status, score, next_steps = rank_fields(trial, results)
    ages = age_range(facts.demographics, as_of)
    demographics = facts.demographics
    return PatientResult(
        trial=TrialRef(trial.id, trial.version, terms.version),
        patient=PatientSummary(
            reference=facts.reference,
            age=ages[1] if ages and ages[0] == ages[1] else None,
            sex=demographics.sex if demographics else None,
        ),
        as_of=as_of,
        status=status,
        score=score,
        criteria=results,
        next_steps=next_steps,
        problems=[f"{p.where}: {p.message}" if p.where else p.message for p in facts.problems],
    )
