"""`sweep`, `runs`, `diff` and `export`: the run store from the command line.

The store (SQLAlchemy), the runner and the FHIR client it may use are imported when one of
these commands runs, never by `--help` or `screen`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli import render
from service.cli.options import (
    AsOfOption,
    DataOption,
    ExportFormat,
    RunsFormat,
    TrialOption,
    WorkersOption,
    fail,
    parse_day,
)
from service.config import Settings, get_settings
from service.errors import ServiceError

if TYPE_CHECKING:
    from pathlib import Path

    from service.screening import Screener
    from service.sweeps import RunInfo, Source, SweepRunner, SweepStore
    from service.worklist import Decision

__all__ = ["diff_command", "export_command", "runs_command", "sweep_command"]

STAGES = {
    "queued": "starting",
    "export": "exporting from the FHIR server",
    "history": "reading deletions from the server's history",
    "snapshot": "merging into the snapshot",
    "read": "reading",
    "evaluate": "evaluating",
    "store": "storing results",
}


def _store(settings: Settings) -> SweepStore:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from service.sweeps import SweepStore

    try:
        return SweepStore(settings.database_url)
    except (SQLAlchemyError, ValueError) as exc:
        try:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
        except ValueError:
            where = "COHORT_MATCH_DATABASE_URL"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"cannot open the sweep store {where}: {first}") from None


def _sweep_source(settings: Settings, source: str | None, data: Path | None) -> Source:
    from service.sweeps import Source, configured_source

    if source is not None and data is not None:
        raise fail("give --source or --data, not both")
    try:
        if source is not None:
            return Source.fhir(source)
        if data is not None:
            return Source.files(data)
        return configured_source(settings) or Source.files(settings.demo_dir)
    except ServiceError as exc:
        raise fail(exc.message) from None


class Engine(StrEnum):
    local = "local"
    spark = "spark"


def _screener(engine: Engine, master: str | None) -> Screener:
    """The screen a sweep runs: this machine's worker processes, or the Spark job."""
    if engine is Engine.local:
        from service.screening import screen

        return screen
    try:
        from service.spark import spark_screen
        from service.spark.job import session
    except ImportError:
        raise fail("--engine spark needs pyspark: pip install 'cohort-match[spark]'") from None
    return functools.partial(spark_screen, spark=session(master))


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


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
    workers: WorkersOption = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="From a FHIR server: export everything, not only what changed since the "
            "last run's snapshot.",
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local: worker processes on this machine; spark: the Spark job "
            "(pip install 'cohort-match[spark]'; master from --spark-master or spark-submit).",
        ),
    ] = Engine.local,
    spark_master: Annotated[
        str | None,
        typer.Option("--spark-master", help="With --engine spark: e.g. local[4], yarn."),
    ] = None,
) -> None:
    """Sweep a trial's population into the run store; print counts, the funnel and what
    changed since the previous run. Default source: COHORT_MATCH_SWEEP_DATA_DIR, else
    COHORT_MATCH_FHIR_BASE_URL, else the bundled demo. From a FHIR server, a run after a
    completed one asks only for what changed since (see COHORT_MATCH_SWEEP_INCREMENTAL)."""
    from service.sweeps import SweepRunner

    settings = get_settings()
    if workers is not None:
        settings = settings.model_copy(update={"sweep_workers": workers})
    day = parse_day(as_of)
    where = _sweep_source(settings, source, data)
    store = _store(settings)
    try:
        runner = SweepRunner(settings, store, screener=_screener(engine, spark_master))
        try:
            run_id = runner.begin(trial, day, where, _who(), full=full)
        except ServiceError as exc:
            raise fail(exc.message) from None
        run = _execute(runner, run_id)
        if run.status != "completed":
            raise fail(f"run {run.id} {run.status}: {run.error}")
        _summarize(store, run)
    finally:
        store.close()


def _execute(runner: SweepRunner, run_id: int) -> RunInfo:
    """Run a begun sweep with a progress bar on stderr; Ctrl-C cancels it (exit 130)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=render.err, transient=True) as bar:
        task = bar.add_task(f"run {run_id}: starting", total=None)

        def show(stage: str, done: int, total: int) -> None:
            label = f"run {run_id}: {STAGES.get(stage, stage)}"
            bar.update(task, description=label, completed=done, total=total or None)

        try:
            return runner.execute(run_id, progress=show)
        except KeyboardInterrupt:
            render.err.print(f"[yellow]cancelled:[/] run {run_id}", highlight=False)
            raise typer.Exit(code=130) from None


def _summarize(store: SweepStore, run: RunInfo) -> None:
    """A completed run: skipped records, the funnel, the counts, and the change since the
    previous completed run that kept its results."""
    from service.sweeps.report import attrition, diff_runs

    render.print_run_problems(run)
    render.print_funnel(attrition(store, run))
    render.print_run_counts(run)
    previous = store.previous_completed(run)
    if previous is not None and previous.has_results:
        decisions = _decisions(store, run.trial_id)
        render.print_since(previous, run, diff_runs(store, previous, run, decisions))


def _decisions(store: SweepStore, trial_id: str) -> dict[str, list[Decision]]:
    """Each patient's decisions for the trial, from the same database as the runs, so that
    the diff keeps patients with an open decision apart from the new candidates."""
    from service.worklist.store import DecisionStore

    return DecisionStore(store.engine).by_patient(trial_id)


def runs_command(
    trial: Annotated[str | None, typer.Option("--trial", help="Only this trial's runs.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N runs.")] = 20,
    output: Annotated[RunsFormat, typer.Option("--format", help="table or json.")] = (
        RunsFormat.table
    ),
) -> None:
    """List sweep runs, newest first."""
    from service.sweeps.report import run_public
    from service.sweeps.schemas import SweepListPublic

    store = _store(get_settings())
    try:
        runs = store.runs(trial, limit)
    finally:
        store.close()
    if output is RunsFormat.json:
        render.print_model_json(SweepListPublic(runs=[run_public(r) for r in runs]))
        return
    render.print_runs(runs)


def diff_command(
    run_a: Annotated[int, typer.Argument(help="The earlier run.")],
    run_b: Annotated[int, typer.Argument(help="The later run.")],
    output: Annotated[RunsFormat, typer.Option("--format", help="table or json.")] = (
        RunsFormat.table
    ),
) -> None:
    """What changed from RUN_A to RUN_B: new candidates, dropped out, status changes, and
    the criteria whose verdict changed."""
    from service.sweeps.report import diff_runs

    store = _store(get_settings())
    try:
        earlier, later = store.get(run_a), store.get(run_b)
        diff = diff_runs(store, earlier, later, _decisions(store, later.trial_id))
    except ServiceError as exc:
        raise fail(exc.message) from None
    finally:
        store.close()
    if output is RunsFormat.json:
        render.print_model_json(diff)
        return
    render.print_diff(diff)


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
        _export(settings, store, run, output)
    except ServiceError as exc:
        raise fail(exc.message) from None
    finally:
        store.close()


def _export(settings: Settings, store: SweepStore, run: RunInfo, output: ExportFormat) -> None:
    from service.criteria.model import TrialError
    from service.sweeps.report import csv_lines, fhir_bundle, ranked_json
    from service.trials import TrialNotFound, find_trial

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
        render.print_json(fhir_bundle(store, run, title=title))
    stream.flush()
