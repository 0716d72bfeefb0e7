"""Trial definitions and the engine: `evaluate(trial, facts, as_of, terms)` -> PatientResult.

    model.py    the trial file's typed rules; load_trial, check_valuesets
    engine.py   evaluate: each criterion's verdict, the patient's status and score
    verdict.py  Verdict, Evidence, CriterionResult, PatientResult
    common.py   what the rule modules share (windows, comparisons); one module per rule kind

The names below are imported on first use: `service.ranking` imports `model` and `verdict`
while `engine` imports `service.ranking`, so importing `engine` here would be a cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.criteria.engine import evaluate
    from service.criteria.model import (
        Criterion,
        TrialDefinition,
        TrialError,
        check_valuesets,
        load_trial,
    )
    from service.criteria.verdict import (
        CriterionResult,
        Evidence,
        PatientResult,
        Status,
        Verdict,
        VerdictValue,
    )

__all__ = [
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
]

_HOME = {
    "evaluate": "engine",
    **dict.fromkeys(
        ["Criterion", "TrialDefinition", "TrialError", "check_valuesets", "load_trial"], "model"
    ),
    **dict.fromkeys(
        ["CriterionResult", "Evidence", "PatientResult", "Status", "Verdict", "VerdictValue"],
        "verdict",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
