"""The public names of the main packages, pinned: a change to one is a change to this file.

Each package's `__all__` must equal the names below, and `from <package> import <name>` must
work for each (a name may be a submodule, for the packages kept import-free).
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "service.api": [
        "cds_hooks",
        "health",
        "match",
        "outcome",
        "pages",
        "smart",
        "sweeps",
        "trials",
    ],
    "service.cds": [
        "AS_OF_EXTENSION",
        "CardPublic",
        "CdsClient",
        "CdsClientValidator",
        "CdsDataUnavailable",
        "CdsResponsePublic",
        "CdsStore",
        "HookRequest",
        "IssuedCard",
        "PrefetchQuery",
        "card_for",
        "gather",
        "prefetch_queries",
        "read_prefetch",
    ],
    "service.cli": ["app", "main"],
    "service.criteria": [
        "Criterion",
        "CriterionResult",
        "Evidence",
        "PatientResult",
        "Status",
        "TrialDefinition",
        "TrialError",
        "Verdict",
        "VerdictValue",
        "check_valuesets",
        "evaluate",
        "load_trial",
    ],
    "service.fhir": [
        "Auth",
        "FetchPlan",
        "FhirClient",
        "HostBound",
        "NoAuth",
        "PatientRecords",
        "Retry",
        "RetryPolicy",
        "SmartBackendAuth",
        "StaticBearer",
        "fetch_records",
        "send",
    ],
    "service.mappers": [
        "SHARED_TYPES",
        "SUBJECT_FIELD",
        "Mapped",
        "MappingError",
        "MedicationTable",
        "map_resource",
        "problem_for",
        "relevant",
        "subject_of",
    ],
    "service.smart": [
        "AuthorizationDenied",
        "Completed",
        "EhrUnavailable",
        "LaunchRefused",
        "PendingLaunch",
        "SessionStore",
        "SmartError",
        "SmartRuntime",
        "SmartSession",
        "StateInvalid",
        "safe_target",
    ],
    "service.sweeps": [
        "BackgroundSweeps",
        "RunInfo",
        "RunNotReady",
        "Source",
        "SweepConflict",
        "SweepRunner",
        "SweepStore",
        "configured_source",
    ],
    "service.vocab": [
        "definition",
        "ecl",
        "expansion",
        "fhir_tx",
        "omop",
        "rf2",
        "rrf",
        "runtime",
        "unmapped",
    ],
    "service.web": ["STATIC", "render", "stylesheet"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned(package: str) -> None:
    assert sorted(importlib.import_module(package).__all__) == sorted(PUBLIC[package])


@pytest.mark.parametrize(
    ("package", "name"), [(package, name) for package, names in PUBLIC.items() for name in names]
)
def test_each_public_name_imports(package: str, name: str) -> None:
    # __import__ with a fromlist is `from package import name`: submodules are imported too
    module = __import__(package, fromlist=[name])
    assert getattr(module, name) is not None


def test_criteria_names_are_the_engine_s_own() -> None:
    from service.criteria import evaluate
    from service.criteria.engine import evaluate as engine_evaluate

    assert evaluate is engine_evaluate
    with pytest.raises(AttributeError):
        _ = importlib.import_module("service.criteria").not_a_name
