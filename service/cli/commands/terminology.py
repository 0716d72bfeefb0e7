"""`terminology expand` and `terminology unmapped`: maintaining the code tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli import render
from service.cli.options import DataOption, Format, TrialOption, fail
from service.config import get_settings

__all__ = ["app", "expand_command", "unmapped_command"]

app = typer.Typer(
    no_args_is_help=True, help="Maintain the code tables: expand definitions, find unmapped codes."
)


@app.command("expand")
def expand_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Value sets (default: all with a definition)."),
    ] = None,
    rf2: Annotated[Path | None, typer.Option(help="SNOMED CT RF2 release directory.")] = None,
    omop: Annotated[
        Path | None, typer.Option(help="OMOP vocabulary export (Athena CSV directory).")
    ] = None,
    rxnorm: Annotated[Path | None, typer.Option(help="RxNorm RRF release directory.")] = None,
    tx: Annotated[str | None, typer.Option(help="FHIR terminology server base URL.")] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the CSVs (default: dry run).")] = (
        False
    ),
) -> None:
    """Regenerate value-set CSVs from their definitions; prints what would change."""
    from service.vocab import expansion

    try:
        valuesets = get_settings().terminology_dir / "valuesets"
        readers = expansion.readers(rf2=rf2, omop=omop, rxnorm=rxnorm, tx=tx)
        changes = expansion.plan(valuesets, names or [], readers)
    except ValueError as exc:
        raise fail(str(exc)) from None
    for change in changes:
        render.print_change(change)
        if write and (change.added or change.removed):
            expansion.write(valuesets, change)
    if not write:
        render.err.print("dry run: nothing written (add --write)")
    if any(change.problems for change in changes):
        raise typer.Exit(code=1)


@app.command("unmapped")
def unmapped_command(
    trial: TrialOption = "NCT06946485",
    data: DataOption = None,
    output: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    limit: Annotated[int | None, typer.Option(help="Only the N most frequent codes.")] = None,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this resource type (repeatable), e.g. Condition."),
    ] = None,
) -> None:
    """List, by frequency, the codes in a population that no value set of the trial knows."""
    from service.criteria.model import TrialError, valuesets_named
    from service.terminology import TerminologyError, load_default
    from service.trials import TrialNotFound, find_trial
    from service.vocab.unmapped import unmapped

    settings = get_settings()
    try:
        definition, _ = find_trial(settings.trials_dir, trial)
        terms = load_default(settings.terminology_dir, settings.site_code_map)
        wanted = frozenset(valuesets_named(definition))
        if types:
            report = unmapped(data or settings.demo_dir, terms, wanted, frozenset(types))
        else:
            report = unmapped(data or settings.demo_dir, terms, wanted)
    except (TrialNotFound, TrialError, TerminologyError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    rows = report.codes[:limit] if limit is not None else report.codes
    if output is Format.json:
        render.print_unmapped_json(trial, report, rows)
    elif output is Format.csv:
        render.print_unmapped_csv(rows)
    else:
        render.print_unmapped_table(trial, report, rows)
