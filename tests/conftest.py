"""Shared fixtures: the real code tables, the real trial file, and `run`.

`run(resources, criterion_id)` is the whole path a verdict takes (FHIR JSON -> mappers ->
PatientFacts -> engine) for one criterion of NCT06946485, on the fixed date AS_OF. A resource
that cannot be read becomes a Problem exactly as in a screening run (service.screening).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import lru_cache
from typing import Any

import pytest

from service.criteria.common import Context
from service.criteria.engine import evaluate_criterion
from service.criteria.model import TrialDefinition, load_trial
from service.criteria.verdict import CriterionResult
from service.facts import PatientFacts
from service.mappers import MappingError, map_resource, problem_for
from service.paths import data_root
from service.terminology import Terminology

ROOT = data_root()
TRIAL_PATH = ROOT / "trials" / "NCT06946485.yaml"
# Not a month end, not a leap day; the lookback and age boundaries below are computed from it.
AS_OF = date(2026, 11, 27)
PATIENT = "Patient/p1"


@lru_cache(maxsize=1)
def load_terms() -> Terminology:
    return Terminology.load(ROOT / "terminology")


@lru_cache(maxsize=1)
def load_nct() -> TrialDefinition:
    return load_trial(TRIAL_PATH)


@pytest.fixture(scope="session")
def terms() -> Terminology:
    return load_terms()


@pytest.fixture(scope="session")
def trial() -> TrialDefinition:
    return load_nct()


def facts_of(resources: Iterable[dict[str, Any]], patient: str = PATIENT) -> PatientFacts:
    """Map resources into one patient's facts; unreadable ones become Problems."""
    facts = PatientFacts(patient)
    for resource in resources:
        try:
            mapped = map_resource(resource, load_terms(), "test")
        except MappingError as exc:
            mapped = problem_for(resource, str(exc), "test", load_terms())
        if mapped is not None:
            assert mapped.patient == patient, f"{mapped.patient} is not the patient under test"
            facts.add(mapped.fact)
    return facts


def context(as_of: date = AS_OF) -> Context:
    trial = load_nct()
    return Context(
        as_of=as_of,
        terms=load_terms(),
        trial_id=trial.id,
        default_lookback_days=trial.defaults.lookback_days,
    )


def run(
    resources: Iterable[dict[str, Any]], criterion_id: str, as_of: date = AS_OF
) -> CriterionResult:
    """The result of one criterion of the trial for the patient these resources describe."""
    criterion = load_nct().criterion(criterion_id)
    return evaluate_criterion(criterion, facts_of(resources), context(as_of))
