"""What several commands parse alike: output formats, --trial/--data/--as-of, and the one-line
error exit (code 2) every command uses for a bad argument or an input it cannot read."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from service.as_of import check_as_of
from service.cli.render import err
from service.clock import today
from service.config import get_settings

__all__ = [
    "AsOfOption",
    "DataOption",
    "ExportFormat",
    "Format",
    "RunsFormat",
    "TrialOption",
    "WorkersOption",
    "fail",
    "parse_day",
]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class RunsFormat(StrEnum):
    table = "table"
    json = "json"


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"
    fhir = "fhir"


TrialOption = Annotated[str, typer.Option("--trial", help="Trial id (a file in trials/).")]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Directory or file of FHIR JSON Bundles / NDJSON. Default: the bundled demo."
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Evaluate as on this date (YYYY-MM-DD). Default: today."),
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Worker processes (default: by input size).")
]


def fail(message: str) -> typer.Exit:
    """The exit for a bad argument or unreadable input: one line on stderr, code 2."""
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def parse_day(text: str | None) -> date:
    """--as-of as a date in the accepted range; without it, today in the configured zone."""
    if text is None:
        try:
            return today(get_settings())
        except ValueError as exc:  # an unknown COHORT_MATCH_SWEEP_TIMEZONE
            raise fail(str(exc)) from None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise fail(f"--as-of must be a date YYYY-MM-DD, got {text!r}") from None
    try:
        return check_as_of(day)
    except ValueError as exc:
        raise fail(f"--{exc}") from None
