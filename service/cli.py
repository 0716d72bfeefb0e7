"""The `cohort-match` command line (typer for parsing and help, rich for tables).

    cohort-match screen  --trial NCT06946485 [--data PATH] [--as-of DATE] [--format table|json|csv]
    cohort-match explain --trial NCT06946485 [--data PATH] --patient ID [--as-of DATE]
    cohort-match trials
    cohort-match serve   [--host HOST] [--port PORT]

Without --data the bundled synthetic demo population is screened. Errors are one line on
stderr; a bad file or resource is named and skipped, and the run completes.
"""

from __future__ import annotations

import csv
import logging
import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from service.config import Settings, get_settings
from service.criteria.model import TrialError
from service.screening import ScreenRun, screen
from service.terminology import TerminologyError
from service.trials import TrialNotFound, find_trial, list_trials

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
MAX_ERRORS_SHOWN = 20
MARK = {
    "pass": "[green]pass[/]",
    "fail": "[red]FAIL[/]",
    "unknown": "[yellow]unknown[/]",
    "not_applicable": "[dim]n/a[/]",
}


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _parse_day(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"--as-of must be a date YYYY-MM-DD, got {text!r}") from None


def _run(
    settings: Settings, trial_id: str, data: Path | None, as_of: date, **kwargs: Any
) -> ScreenRun:
    try:
        _, trial_path = find_trial(settings.trials_dir, trial_id)
        return screen(
            data or settings.demo_dir,
            trial_path,
            settings.terminology_dir,
            as_of,
            site_map=settings.site_code_map,
            **kwargs,
        )
    except (TrialNotFound, TrialError, TerminologyError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def _report_errors(run: ScreenRun) -> None:
    for error in run.errors[:MAX_ERRORS_SHOWN]:
        err.print(f"[yellow]skipped:[/] {error}", highlight=False)
    if run.error_count > MAX_ERRORS_SHOWN:
        err.print(
            f"[yellow]skipped:[/] ... and {run.error_count - MAX_ERRORS_SHOWN} more",
            highlight=False,
        )


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


@app.command("screen")
def screen_command(
    trial: TrialOption = "NCT06946485",
    data: DataOption = None,
    as_of: AsOfOption = None,
    output: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: by input size).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Show only the first N candidates (table).")
    ] = None,
) -> None:
    """Screen every patient in the data and print the ranked candidate list."""
    settings = get_settings()
    day = _parse_day(as_of)
    run = _run(settings, trial, data, day, workers=workers)
    try:
        _report_errors(run)
        if output is Format.json:
            _write_json(run)
        elif output is Format.csv:
            _write_csv(run)
        else:
            _write_table(run, limit)
    finally:
        run.close()


def _write_json(run: ScreenRun) -> None:
    stream = sys.stdout.buffer
    head = {
        "trial": {
            "id": run.trial.id,
            "version": run.trial.version,
            "terminology": run.terms.version,
        },
        "as_of": run.as_of,
    }
    stream.write(orjson.dumps(head)[:-1] + b', "candidates": [')
    for rank, summary in enumerate(run.summaries, start=1):
        body = run.result_bytes(summary)
        stream.write(
            (b"" if rank == 1 else b",")
            + b"\n"
            + body[:-1]
            + b',"rank":'
            + str(rank).encode()
            + b"}"
        )
    stream.write(b'\n], "counts": ' + orjson.dumps(run.counts()) + b"}\n")
    stream.flush()


def _write_csv(run: ScreenRun) -> None:
    ids = [c.id for c in run.trial.criteria]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["rank", "patient", "status", "score", "age", "sex", *ids])
    for result in run.results():
        verdicts = {c["id"]: c["verdict"] for c in result["criteria"]}
        patient = result["patient"]
        writer.writerow(
            [
                result["rank"],
                patient["reference"],
                result["status"],
                result["score"],
                patient["age"] if patient["age"] is not None else "",
                patient["sex"] or "",
                *(verdicts[i] for i in ids),
            ]
        )


def _write_table(run: ScreenRun, limit: int | None) -> None:
    counts = run.counts()
    table = Table(title=f"{run.trial.id} candidates as of {run.as_of}", show_lines=False)
    for column in (
        "rank",
        "patient",
        "status",
        "score",
        "age",
        "sex",
        "fail",
        "unknown",
        "next step",
    ):
        table.add_column(column, overflow="fold")
    style = {"likely_eligible": "green", "possibly_eligible": "yellow", "ineligible": "red"}
    shown = run.summaries if limit is None else run.summaries[:limit]
    for rank, s in enumerate(shown, start=1):
        table.add_row(
            str(rank),
            s.reference,
            f"[{style[s.status]}]{s.status}[/]",
            f"{s.score:.2f}",
            "" if s.age is None else str(s.age),
            s.sex or "",
            str(s.fails),
            str(s.unknowns),
            (s.next_step or "")[:90],
        )
    out.print(table)
    out.print(
        f"{counts['patients']} patients from {counts['resources']} resources: "
        f"{counts['likely_eligible']} likely eligible, "
        f"{counts['possibly_eligible']} possibly eligible, "
        f"{counts['ineligible']} ineligible; {counts['errors']} unreadable record(s) skipped. "
        f"Trial version {run.trial.version}, terminology {run.terms.version}.",
        highlight=False,
    )


@app.command("explain")
def explain_command(
    patient: Annotated[str, typer.Option("--patient", help="Patient id or Patient/<id>.")],
    trial: TrialOption = "NCT06946485",
    data: DataOption = None,
    as_of: AsOfOption = None,
    output: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Print one patient's checklist: every criterion with verdict, reason and evidence."""
    settings = get_settings()
    reference = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    run = _run(settings, trial, data, _parse_day(as_of), only_patient=reference)
    try:
        # Unreadable records of this patient are listed with the checklist (problems);
        # other files' errors are not this command's business.
        match = [s for s in run.summaries if s.reference == reference]
        if not match:
            raise _fail(f"no records for {reference} in {data or settings.demo_dir}")
        result = orjson.loads(run.result_bytes(match[0]))
    finally:
        run.close()
    if output is Format.json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    _print_checklist(result)


def _print_checklist(result: dict[str, Any]) -> None:
    patient = result["patient"]
    out.print(
        f"[bold]{patient['reference']}[/]  age {patient['age']}  sex {patient['sex']}  "
        f"as of {result['as_of']}  ->  [bold]{result['status']}[/] (score {result['score']:.2f})",
        highlight=False,
    )
    for kind in ("inclusion", "exclusion"):
        out.print(f"\n[bold underline]{kind.title()} criteria[/]")
        for c in (c for c in result["criteria"] if c["kind"] == kind):
            manual = " [dim](manual)[/]" if c["assessment"] == "manual" else ""
            out.print(
                f"  {c['id']:<16} {MARK[c['verdict']]}{manual}  {c['reason']}", highlight=False
            )
            for e in c["evidence"]:
                out.print(f"      - {_evidence_line(e)}", highlight=False, style="dim")
    if result["next_steps"]:
        out.print("\n[bold underline]What to check next[/]")
        for step in result["next_steps"]:
            out.print(f"  - {step}", highlight=False)
    for problem in result.get("problems", []):
        err.print(f"[yellow]unreadable record:[/] {problem}", highlight=False)


def _evidence_line(e: dict[str, Any]) -> str:
    parts = [e["reference"] or "derived"]
    if e.get("code"):
        parts.append(f"{e['code']['system'].rsplit('/', 1)[-1]} {e['code']['code']}")
    if e.get("value") is not None:
        value = f"{e['value']} {e.get('unit') or ''}".strip()
        if e.get("converted_value") is not None and e.get("converted_unit") != e.get("unit"):
            value += f" (= {e['converted_value']} {e['converted_unit']})"
        parts.append(value)
    if e.get("date"):
        parts.append(str(e["date"]))
    if e.get("rule"):
        parts.append(e["rule"])
    if e.get("note"):
        parts.append(f"[{e['note']}]")
    return " | ".join(parts)


@app.command("trials")
def trials_command() -> None:
    """List the trials this installation serves."""
    settings = get_settings()
    try:
        trials = list_trials(settings.trials_dir)
    except TrialError as exc:
        raise _fail(str(exc)) from None
    for trial_id, (definition, path) in trials.items():
        out.print(
            f"{trial_id}  v{definition.version}  {len(definition.criteria)} criteria  {path}",
            highlight=False,
        )


@app.command("serve")
def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default COHORT_MATCH_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default COHORT_MATCH_PORT).")] = None,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn
    from pydantic import ValidationError

    from service.main import create_app

    base = get_settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        settings = Settings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise _fail(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


def main() -> None:
    try:
        level = get_settings().log_level
    except ValueError as exc:  # unsafe settings are refused before anything starts
        err.print(f"[red]error:[/] {str(exc).splitlines()[-1]}", highlight=False)
        raise SystemExit(2) from None
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
