"""Parsing and dispatch: the typer app, its commands in `--help` order, and `main`."""

from __future__ import annotations

import logging

import typer

from service.cli.commands import screen, serve, sweeps, terminology, trials
from service.cli.render import err
from service.config import get_settings

__all__ = ["app", "main"]

HELP = "The `cohort-match` command line (typer for parsing and help, rich for tables)."

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
# The order here is the order `cohort-match --help` lists them.
app.command("screen")(screen.screen_command)
app.command("explain")(screen.explain_command)
app.command("trials")(trials.trials_command)
app.command("serve")(serve.serve_command)
app.command("sweep")(sweeps.sweep_command)
app.command("runs")(sweeps.runs_command)
app.command("diff")(sweeps.diff_command)
app.command("export")(sweeps.export_command)
app.add_typer(terminology.app, name="terminology")


def main() -> None:
    try:
        level = get_settings().log_level
    except ValueError as exc:  # unsafe settings are refused before anything starts
        err.print(f"[red]error:[/] {str(exc).splitlines()[-1]}", highlight=False)
        raise SystemExit(2) from None
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app()
