"""Shared fixtures: the real code tables, the real trial file, `run`, and `app_for`.

`run(resources, criterion_id)` is the whole path a verdict takes (FHIR JSON -> mappers ->
PatientFacts -> engine) for one criterion of NCT06946485, on the fixed date AS_OF. A resource
that cannot be read becomes a Problem exactly as in a screening run (service.screening).

What only tests read is loaded once per test process: the code tables (`load_terms`), the
trial files (`load_trials`); `app_for(settings)` builds each app's state around them, with
the database, clients and threads of its own settings, so every test still writes to a
fresh database of its own. Under pytest-xdist each worker is one such process.

No test writes into the checkout: COHORT_MATCH_DATABASE_URL (an app built with the default
Settings) points into the session's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from service.config import Settings
from service.criteria.common import Context
from service.criteria.engine import evaluate_criterion
from service.criteria.model import TrialDefinition, load_trial
from service.criteria.verdict import CriterionResult
from service.facts import PatientFacts
from service.main import create_app
from service.mappers import MappingError, map_resource, problem_for
from service.paths import data_root
from service.terminology import Terminology
from service.trials import list_trials

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


@lru_cache(maxsize=1)
def load_trials() -> dict[str, TrialDefinition]:
    """Every trial under trials/, as the app serves them."""
    return {trial_id: trial for trial_id, (trial, _) in list_trials(ROOT / "trials").items()}


def app_for(settings: Settings, **injected: Any) -> FastAPI:
    """`create_app(settings)`, with the code tables and trials this process already loaded
    when `settings` reads the shipped ones (loading them is most of the cost of an app).
    Everything else in the state (database, FHIR clients, token validator) is built from
    `settings` at startup as the app would; `injected` are create_app's test seams (clock,
    transport, exporter)."""
    shipped = (
        settings.terminology_dir == ROOT / "terminology"
        and settings.site_code_map is None
        and settings.trials_dir == ROOT / "trials"
        # a terminology server teaches the tables new memberships: those stay in its own app
        and settings.terminology_url is None
    )
    if not shipped:
        return create_app(settings, **injected)
    return create_app(settings, terms=load_terms(), trial_definitions=load_trials(), **injected)


@pytest.fixture(scope="session", autouse=True)
def _no_database_in_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An app or CLI command left at the default database writes into the session's temp
    directory, never into the checkout (and never into another xdist worker's file)."""
    database = tmp_path_factory.mktemp("default-database") / "cohort-match.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COHORT_MATCH_DATABASE_URL", f"sqlite:///{database}")
        yield


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


TESTS = Path(__file__).resolve().parent
# tmp_path on a memory-backed file system where the host has one: SQLite syncs each schema
# change and commit to disk, and a fresh database per app (audit, SMART, CDS, sweep tables)
# cost three times as much on disk (0.5 s against 0.17 s per app, measured on ext4). pytest
# keeps its numbered directories under this root as usual; an explicit --basetemp or
# PYTEST_DEBUG_TEMPROOT wins.
MEMORY_TEMP = Path("/dev/shm")  # noqa: S108 (pytest makes its own 0700 pytest-of-<user> there)


def pytest_configure(config: pytest.Config) -> None:
    if MEMORY_TEMP.is_dir() and os.access(MEMORY_TEMP, os.W_OK | os.X_OK):
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(MEMORY_TEMP))


# A test in these folders belongs to scripts/check's second pass (one process, in order) even
# if its module forgets the marker.
# tests/spark start a JVM (PySpark local[2]): the second pass too.
FOLDER_MARKERS = {
    "integration": pytest.mark.integration,
    "browser": pytest.mark.browser,
    "spark": pytest.mark.integration,
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
