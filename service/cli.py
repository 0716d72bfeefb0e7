"""The `cohort-match` command line (typer for parsing and help, rich for tables).

    cohort-match screen  --trial NCT06946485 [--data PATH] [--as-of DATE] [--format table|json|csv]
    cohort-match explain --trial NCT06946485 [--data PATH] --patient ID [--as-of DATE]
    cohort-match trials
    cohort-match serve   [--host HOST] [--port PORT]
    cohort-match sweep   --trial NCT06946485 [--source FHIR_URL | --data PATH] [--as-of DATE]
    cohort-match runs    [--trial ID] [--format table|json]
    cohort-match diff    RUN_A RUN_B [--format table|json]
    cohort-match export  RUN [--format json|csv|fhir]
    cohort-match terminology expand   [NAME ...] (--rf2 DIR | --omop DIR | --rxnorm DIR | --tx URL)
                                      [--write]
    cohort-match terminology unmapped --trial ID [--data PATH] [--format table|json|csv]
                                      [--limit N] [--type RESOURCE_TYPE ...]

Without --data the bundled synthetic demo population is screened. Errors are one line on
stderr; a bad file or resource is named and skipped, and the run completes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
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

from service.as_of import check_as_of
from service.clock import today
from service.config import Settings, get_settings
from service.criteria.model import TrialError
from service.errors import ServiceError
from service.results_csv import CSV_HEAD, csv_row, identifiers_text
from service.screening import ScreenRun, screen
from service.sweeps import RunInfo, Source, SweepRunner, SweepStore, configured_source
from service.sweeps.report import (
    attrition,
    csv_lines,
    diff_runs,
    fhir_bundle,
    ranked_json,
    run_public,
)
from service.sweeps.schemas import AttritionPublic, SweepListPublic
from service.terminology import TerminologyError
from service.trials import TrialNotFound, find_trial, list_trials

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
# Piped or redirected output (CI logs, files) gets a wide table instead of rich's 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 180)
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
        try:
            return today(get_settings())
        except ValueError as exc:  # an unknown COHORT_MATCH_SWEEP_TIMEZONE
            raise _fail(str(exc)) from None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _fail(f"--as-of must be a date YYYY-MM-DD, got {text!r}") from None
    try:
        return check_as_of(day)
    except ValueError as exc:
        raise _fail(f"--{exc}") from None


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
            mrn_type=settings.mrn_type,
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
    writer.writerow([*CSV_HEAD, *ids])
    for result in run.results():
        writer.writerow(csv_row(result, ids))


def _write_table(run: ScreenRun, limit: int | None) -> None:
    counts = run.counts()
    table = Table(title=f"{run.trial.id} candidates as of {run.as_of}", show_lines=False)
    for column in (
        "rank",
        "patient",
        "mrn",
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
            s.mrn or "",
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
    mrn = f"  MRN {patient['mrn']}" if patient.get("mrn") else ""
    out.print(
        f"[bold]{patient['reference']}[/]{mrn}  age {patient['age']}  sex {patient['sex']}  "
        f"as of {result['as_of']}  ->  [bold]{result['status']}[/] (score {result['score']:.2f})",
        highlight=False,
    )
    if patient.get("identifiers"):
        out.print(f"  identifiers: {identifiers_text(patient['identifiers'])}", highlight=False)
    if result.get("status_reason"):
        out.print(f"  [bold red]{result['status_reason']}[/]", highlight=False)
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


# ---------------------------------------------------------------- sweeps (issue 4)
class RunsFormat(StrEnum):
    table = "table"
    json = "json"


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"
    fhir = "fhir"


STAGES = {
    "queued": "starting",
    "export": "exporting from the FHIR server",
    "read": "reading",
    "evaluate": "evaluating",
    "store": "storing results",
}


def _store(settings: Settings) -> SweepStore:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return SweepStore(settings.database_url)
    except (SQLAlchemyError, ValueError) as exc:
        try:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
        except ValueError:
            where = "COHORT_MATCH_DATABASE_URL"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(f"cannot open the sweep store {where}: {first}") from None


def _sweep_source(settings: Settings, source: str | None, data: Path | None) -> Source:
    if source is not None and data is not None:
        raise _fail("give --source or --data, not both")
    try:
        if source is not None:
            return Source.fhir(source)
        if data is not None:
            return Source.files(data)
        return configured_source(settings) or Source.files(settings.demo_dir)
    except ServiceError as exc:
        raise _fail(exc.message) from None


@app.command("sweep")
def sweep_command(
    trial: TrialOption = "NCT06946485",
    source: Annotated[
        str | None,
        typer.Option(
            "--source", help="FHIR base URL to Bulk-export from (searches if it has no $export)."
        ),
    ] = None,
    data: DataOption = None,
    as_of: AsOfOption = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: by input size).")
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="From a FHIR server: export everything, not only what changed since the "
            "last run's snapshot.",
        ),
    ] = False,
) -> None:
    """Sweep a trial's population into the run store; print counts, the funnel and what
    changed since the previous run. Default source: COHORT_MATCH_SWEEP_DATA_DIR, else
    COHORT_MATCH_FHIR_BASE_URL, else the bundled demo. From a FHIR server, a run after a
    completed one asks only for what changed since (see COHORT_MATCH_SWEEP_INCREMENTAL)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = get_settings()
    if workers is not None:
        settings = settings.model_copy(update={"sweep_workers": workers})
    day = _parse_day(as_of)
    where = _sweep_source(settings, source, data)
    store = _store(settings)
    try:
        runner = SweepRunner(settings, store)
        try:
            run_id = runner.begin(trial, day, where, _who(), full=full)
        except ServiceError as exc:
            raise _fail(exc.message) from None
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"run {run_id}: starting", total=None)

            def show(stage: str, done: int, total: int) -> None:
                label = f"run {run_id}: {STAGES.get(stage, stage)}"
                bar.update(task, description=label, completed=done, total=total or None)

            try:
                run = runner.execute(run_id, progress=show)
            except KeyboardInterrupt:
                err.print(f"[yellow]cancelled:[/] run {run_id}", highlight=False)
                raise typer.Exit(code=130) from None
        if run.status != "completed":
            raise _fail(f"run {run.id} {run.status}: {run.error}")
        _print_sweep_summary(store, run)
    finally:
        store.close()


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print_sweep_summary(store: SweepStore, run: RunInfo) -> None:
    counts = run.counts
    for problem in run.problems[:MAX_ERRORS_SHOWN]:
        err.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    if counts["errors"] > MAX_ERRORS_SHOWN:
        err.print(
            f"[yellow]skipped:[/] ... and {counts['errors'] - MAX_ERRORS_SHOWN} more "
            f"(cohort-match runs --format json)",
            highlight=False,
        )
    _print_funnel(attrition(store, run))
    out.print(
        f"Run {run.id} of {run.trial_id} (v{run.trial_version}, terminology "
        f"{run.terminology_version}) as of {run.as_of}: {counts['patients']} patients from "
        f"{counts['resources']} resources: {counts['likely_eligible']} likely eligible, "
        f"{counts['possibly_eligible']} possibly eligible, {counts['ineligible']} ineligible; "
        f"{counts['errors']} unreadable record(s) skipped.",
        highlight=False,
    )
    fetched = _fetch_summary(run)
    if fetched:
        out.print(fetched, highlight=False)
    previous = store.previous_completed(run)
    if previous is not None and previous.has_results:
        diff = diff_runs(store, previous, run)
        c = diff.counts
        out.print(
            f"Since run {previous.id} ({previous.as_of}): {c['new']} new candidate(s), "
            f"{c['dropped']} dropped out, {c['status']} changed status, {c['verdicts']} with "
            f"changed verdicts (cohort-match diff {previous.id} {run.id}).",
            highlight=False,
        )


def _fetch_summary(run: RunInfo) -> str | None:
    """How a FHIR run got its data, in one line (None for a screen of files)."""
    changes = run.changes or {}
    if run.mode == "incremental":
        return (
            f"Incremental: {changes.get('read', 0)} resource(s) changed and "
            f"{changes.get('deleted', 0)} deleted since run {run.based_on} "
            f"({changes.get('since')}), touching {changes.get('patients', 0)} patient(s); "
            f"everyone screened again as of {run.as_of}."
        )
    if run.mode == "full":
        return f"Full export: {changes.get('reason', 'requested')}."
    return None


def _print_funnel(funnel: AttritionPublic) -> None:
    table = Table(title=f"Attrition, run {funnel.run} ({funnel.patients} patients)")
    for column in ("criterion", "pass", "fail", "unknown", "n/a", "remaining", "dropped", "unk %"):
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for step in funnel.steps:
        v = step.verdicts
        table.add_row(
            f"{step.id}{'*' if step.assessment == 'manual' else ''}",
            str(v.pass_),
            str(v.fail),
            str(v.unknown),
            str(v.not_applicable),
            str(step.remaining_after),
            f"-{step.dropped}" if step.dropped else "",
            f"{step.unknown_share:.0%}",
        )
    out.print(table)
    out.print(
        "* manual: decided at the screening visit (never `pass` from the record). "
        "remaining: patients with no `fail` up to and including the criterion; "
        "unk %: share of the patients remaining before it that it leaves unknown.",
        highlight=False,
        style="dim",
    )
    if funnel.excluded:
        out.print(
            f"{funnel.excluded} patient(s) excluded before the criteria "
            "(no candidate whatever the criteria say: deceased).",
            highlight=False,
        )
    out.print(
        f"{funnel.remaining} of {funnel.patients} patients fail no criterion: "
        f"{funnel.likely_eligible} likely eligible, {funnel.possibly_eligible} possibly eligible "
        "(unknowns left to check).",
        highlight=False,
    )


def _json_out(model: Any) -> None:
    body = model.model_dump(mode="json", by_alias=True)
    sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


@app.command("runs")
def runs_command(
    trial: Annotated[str | None, typer.Option("--trial", help="Only this trial's runs.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N runs.")] = 20,
    output: Annotated[RunsFormat, typer.Option("--format", help="table or json.")] = (
        RunsFormat.table
    ),
) -> None:
    """List sweep runs, newest first."""
    store = _store(get_settings())
    try:
        runs = store.runs(trial, limit)
    finally:
        store.close()
    if output is RunsFormat.json:
        _json_out(SweepListPublic(runs=[run_public(r) for r in runs]))
        return
    table = Table(title="Sweep runs")
    for column in ("run", "trial", "as of", "status", "started", "took", "patients"):
        table.add_column(column, no_wrap=True)
    table.add_column("likely/possibly/ineligible", no_wrap=True)
    table.add_column("source", overflow="fold")
    style = {"completed": "green", "running": "cyan", "failed": "red", "cancelled": "yellow"}
    for run in runs:
        took = (
            ""
            if run.ended_at is None
            else f"{(run.ended_at - run.started_at).total_seconds():.1f}s"
        )
        table.add_row(
            str(run.id),
            run.trial_id,
            str(run.as_of),
            f"[{style[run.status]}]{run.status}[/]",
            run.started_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            took,
            str(run.counts["patients"]),
            f"{run.counts['likely_eligible']}/{run.counts['possibly_eligible']}/"
            f"{run.counts['ineligible']}",
            f"{run.mode or run.source_kind}: {run.source}"
            + (f" (since run {run.based_on})" if run.based_on else ""),
        )
    out.print(table)
    for run in runs:
        if run.error:
            out.print(f"run {run.id}: {run.error}", highlight=False, style="dim")


@app.command("diff")
def diff_command(
    run_a: Annotated[int, typer.Argument(help="The earlier run.")],
    run_b: Annotated[int, typer.Argument(help="The later run.")],
    output: Annotated[RunsFormat, typer.Option("--format", help="table or json.")] = (
        RunsFormat.table
    ),
) -> None:
    """What changed from RUN_A to RUN_B: new candidates, dropped out, status changes, and
    the criteria whose verdict changed."""
    store = _store(get_settings())
    try:
        diff = diff_runs(store, store.get(run_a), store.get(run_b))
    except ServiceError as exc:
        raise _fail(exc.message) from None
    finally:
        store.close()
    if output is RunsFormat.json:
        _json_out(diff)
        return
    for note in diff.notes:
        out.print(f"note: {note}", highlight=False, style="dim")
    table = Table(title=f"{diff.trial}: run {diff.against.id} -> run {diff.run.id}")
    for column in ("change", "patient", "before", "after", "rank", "criteria changed"):
        table.add_column(column, overflow="fold")
    for change in (
        *diff.new,
        *diff.dropped,
        *diff.status,
        *diff.verdicts,
        *diff.arrived,
        *diff.left,
    ):
        table.add_row(
            change.change,
            change.patient,
            change.before or "(absent)",
            change.after or "(absent)",
            f"{change.rank_before or '-'} -> {change.rank_after or '-'}",
            ", ".join(f"{c.id} {c.before}->{c.after}" for c in change.criteria),
        )
    out.print(table)
    c = diff.counts
    out.print(
        f"{c['new']} new candidate(s), {c['dropped']} dropped out, {c['status']} changed "
        f"status, {c['verdicts']} with changed verdicts, {c['arrived']} new to the population "
        f"but not candidates, {c['left']} non-candidates gone, {c['unchanged']} unchanged.",
        highlight=False,
    )


@app.command("export")
def export_command(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="A completed run.")],
    output: Annotated[ExportFormat, typer.Option("--format", help="json, csv or fhir.")] = (
        ExportFormat.json
    ),
) -> None:
    """Print a completed run's ranked candidates: json (the ranked list), csv (one column per
    criterion, as `screen --format csv`) or fhir (Group + ResearchSubjects Bundle)."""
    settings = get_settings()
    store = _store(settings)
    try:
        run = store.with_results(run_id)
        stream = sys.stdout.buffer
        if output is ExportFormat.json:
            for chunk in ranked_json(store, run):
                stream.write(chunk)
        elif output is ExportFormat.csv:
            for line in csv_lines(store, run):
                stream.write(line.encode())
        else:
            title = None
            with contextlib.suppress(TrialNotFound, TrialError):
                title = find_trial(settings.trials_dir, run.trial_id)[0].title
            bundle = fhir_bundle(store, run, title=title)
            stream.write(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
        stream.flush()
    except ServiceError as exc:
        raise _fail(exc.message) from None
    finally:
        store.close()


# ---------------------------------------------------------------------------- terminology
terminology_app = typer.Typer(
    no_args_is_help=True, help="Maintain the code tables: expand definitions, find unmapped codes."
)
app.add_typer(terminology_app, name="terminology")


@terminology_app.command("expand")
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
        readers = expansion.readers(rf2=rf2, omop=omop, rxnorm=rxnorm, tx=tx)
        changes = expansion.plan(get_settings().terminology_dir / "valuesets", names or [], readers)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    for change in changes:
        mark = "" if change.added or change.removed else " [dim](unchanged)[/]"
        out.print(f"[bold]{change.name}[/]: +{len(change.added)} -{len(change.removed)}{mark}")
        for row in change.added:
            out.print(f"  [green]+[/] {row.system} {row.code} {row.display} ({row.source})")
        for row in change.removed:
            out.print(f"  [red]-[/] {row.system} {row.code} {row.display} ({row.source})")
        for entry in change.skipped:
            err.print(f"[yellow]{change.name}: not expanded (no source given can):[/] {entry}")
        for problem in change.problems:
            err.print(f"[yellow]{change.name}:[/] {problem}", highlight=False)
        if write and (change.added or change.removed):
            expansion.write(get_settings().terminology_dir / "valuesets", change)
    if not write:
        err.print("dry run: nothing written (add --write)")
    if any(change.problems for change in changes):
        raise typer.Exit(code=1)


@terminology_app.command("unmapped")
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
    from service.criteria.model import valuesets_named
    from service.terminology import load_default
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
        raise _fail(str(exc)) from None
    rows = report.codes[:limit] if limit is not None else report.codes
    if output is Format.json:
        body = {
            "trial": trial,
            "resources": report.resources,
            "unmapped_resources": report.unmapped_resources,
            "codes": [dataclasses.asdict(row) for row in rows],
        }
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return
    if output is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("count", "resource_type", "system", "code", "display", "possible"))
        for row in rows:
            writer.writerow(
                (
                    row.count,
                    row.resource_type,
                    row.system,
                    row.code,
                    row.display,
                    " ".join(row.possible),
                )
            )
        return
    table = Table(title=f"Codes no value set of {trial} recognises")
    for column in ("count", "type", "system", "code", "display", "possible"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in rows:
        possible = f"possible: {', '.join(row.possible)}" if row.possible else ""
        table.add_row(
            str(row.count), row.resource_type, row.system, row.code, row.display, possible
        )
    out.print(table)
    out.print(
        f"{report.unmapped_resources} of {report.resources} records unmapped; "
        f"{len(report.codes)} distinct codes"
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
