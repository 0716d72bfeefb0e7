"""`screen` (the ranked list of a population) and `explain` (one patient's checklist)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
import typer

from service.cli import render
from service.cli.options import (
    AsOfOption,
    DataOption,
    Format,
    TrialOption,
    WorkersOption,
    fail,
    parse_day,
)
from service.config import Settings, get_settings

if TYPE_CHECKING:
    from pathlib import Path

    from service.screening import ScreenRun

__all__ = ["explain_command", "screen_command", "screen_population"]

T = TypeVar("T")


def screen_population(
    settings: Settings, trial_id: str, data: Path | None, as_of: date, **kwargs: Any
) -> ScreenRun:
    """Screen `data` (default: the demo) for a trial; a missing trial or file exits with 2."""
    from service.screening import screen

    return _screen_with(screen, settings, trial_id, data, as_of, **kwargs)


def _screen_with(
    screener: Callable[..., T],
    settings: Settings,
    trial_id: str,
    data: Path | None,
    as_of: date,
    **kwargs: Any,
) -> T:
    """`screener` (`screen`, `screen_one`) on `data` (default: the demo) for a trial, with
    the settings' code tables; a missing trial or file exits with 2."""
    from service.criteria.model import TrialError
    from service.terminology import TerminologyError
    from service.trials import TrialNotFound, find_trial

    try:
        _, trial_path = find_trial(settings.trials_dir, trial_id)
        return screener(
            data or settings.demo_dir,
            trial_path,
            settings.terminology_dir,
            as_of,
            site_map=settings.site_code_map,
            mrn_type=settings.mrn_type,
            **kwargs,
        )
    except (TrialNotFound, TrialError, TerminologyError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None


def screen_command(
    trial: TrialOption = "NCT06946485",
    data: DataOption = None,
    as_of: AsOfOption = None,
    output: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    workers: WorkersOption = None,
    limit: Annotated[
        int | None, typer.Option(help="Show only the first N candidates (table).")
    ] = None,
) -> None:
    """Screen every patient in the data and print the ranked candidate list."""
    from service.screening import ScreenOptions

    settings = get_settings()
    day = parse_day(as_of)
    run = screen_population(settings, trial, data, day, options=ScreenOptions(workers=workers))
    try:
        render.report_errors(run)
        if output is Format.json:
            render.write_json(run)
        elif output is Format.csv:
            render.write_csv(run)
        else:
            render.write_table(run, limit)
    finally:
        run.close()


def explain_command(
    patient: Annotated[str, typer.Option("--patient", help="Patient id or Patient/<id>.")],
    trial: TrialOption = "NCT06946485",
    data: DataOption = None,
    as_of: AsOfOption = None,
    output: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Print one patient's checklist: every criterion with verdict, reason and evidence."""
    from service.screening import screen_one

    settings = get_settings()
    reference = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    # Only this patient's lines are routed and screened (screening.screen_one). Unreadable
    # records of this patient are listed with the checklist (problems); other files'
    # errors are not this command's business.
    screened = _screen_with(screen_one, settings, trial, data, parse_day(as_of), patient=reference)
    if screened is None:
        raise fail(f"no records for {reference} in {data or settings.demo_dir}")
    result = orjson.loads(orjson.dumps(screened.result))  # as `screen` writes it
    if output is Format.json:
        render.print_json(result)
        return
    render.print_checklist(result)
