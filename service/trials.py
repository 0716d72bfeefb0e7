"""The trials a deployment serves: every trials/<id>.yaml, validated at load."""

from __future__ import annotations

from pathlib import Path

from service.criteria.model import TrialDefinition, TrialError, load_trial
from service.errors import CohortMatchError

__all__ = ["TrialNotFound", "find_trial", "list_trials"]


class TrialNotFound(CohortMatchError, LookupError):
    pass


def list_trials(trials_dir: Path) -> dict[str, tuple[TrialDefinition, Path]]:
    found: dict[str, tuple[TrialDefinition, Path]] = {}
    for path in sorted(trials_dir.glob("*.yaml")):
        trial = load_trial(path)
        if trial.id in found:
            raise TrialError(f"{path}: trial {trial.id} is also defined in {found[trial.id][1]}")
        found[trial.id] = (trial, path)
    return found


def find_trial(trials_dir: Path, trial_id: str) -> tuple[TrialDefinition, Path]:
    trials = list_trials(trials_dir)
    if trial_id not in trials:
        known = ", ".join(sorted(trials)) or "none"
        raise TrialNotFound(f"unknown trial {trial_id!r} (known: {known})")
    return trials[trial_id]
