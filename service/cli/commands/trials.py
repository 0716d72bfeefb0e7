"""`trials`: the trials this installation serves."""

from __future__ import annotations

from service.cli import render
from service.cli.options import fail
from service.config import get_settings

__all__ = ["trials_command"]


def trials_command() -> None:
    """List the trials this installation serves."""
    from service.criteria.model import TrialError
    from service.trials import list_trials

    settings = get_settings()
    try:
        trials = list_trials(settings.trials_dir)
    except TrialError as exc:
        raise fail(str(exc)) from None
    render.print_trials(trials)
