"""Everything the command line prints: tables (rich), the checklist, JSON and CSV on stdout.

Results go to stdout (`out`), skipped records, progress and errors to stderr (`err`), so a
redirected `--format json|csv` is exactly the data. Types from the screening engine and the
sweep store are named for mypy only: printing never imports them.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from service.ranked_output import csv_lines, identifiers_text, json_chunks, ranked_bodies

if TYPE_CHECKING:
    from service.criteria.model import TrialDefinition
    from service.screening import ScreenRun
    from service.sweeps import RunInfo
    from service.sweeps.schemas import AttritionPublic, DiffPublic
    from service.vocab.expansion import Change
    from service.vocab.unmapped import Report, UnmappedCode

__all__ = [
    "MAX_ERRORS_SHOWN",
    "err",
    "out",
    "print_change",
    "print_checklist",
    "print_diff",
    "print_funnel",
    "print_json",
    "print_model_json",
    "print_run_counts",
    "print_run_problems",
    "print_runs",
    "print_since",
    "print_trials",
    "print_unmapped_csv",
    "print_unmapped_json",
    "print_unmapped_table",
    "report_errors",
    "write_csv",
    "write_json",
    "write_table",
]

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
STATUS_STYLE = {"likely_eligible": "green", "possibly_eligible": "yellow", "ineligible": "red"}
RUN_STYLE = {"completed": "green", "running": "cyan", "failed": "red", "cancelled": "yellow"}


def print_json(body: Any) -> None:
    """Indented JSON on stdout, as `explain --format json` and `export --format fhir` print it."""
    sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def print_model_json(model: Any) -> None:
    """A published pydantic model (runs, diff) as indented JSON, by its field aliases."""
    print_json(model.model_dump(mode="json", by_alias=True))


# ---------------------------------------------------------------------------- screen
def report_errors(run: ScreenRun) -> None:
    for error in run.errors[:MAX_ERRORS_SHOWN]:
        err.print(f"[yellow]skipped:[/] {error}", highlight=False)
    if run.error_count > MAX_ERRORS_SHOWN:
        err.print(
            f"[yellow]skipped:[/] ... and {run.error_count - MAX_ERRORS_SHOWN} more",
            highlight=False,
        )


def write_json(run: ScreenRun) -> None:
    """The ranked list contract (service/ranked_output.py), streamed to stdout."""
    head = {
        "trial": {
            "id": run.trial.id,
            "version": run.trial.version,
            "terminology": run.terms.version,
        },
        "as_of": run.as_of,
    }
    bodies = ranked_bodies(run.result_bytes(summary) for summary in run.summaries)
    stream = sys.stdout.buffer
    stream.writelines(json_chunks(head, bodies, run.counts()))
    stream.flush()


def write_csv(run: ScreenRun) -> None:
    ids = [c.id for c in run.trial.criteria]
    results = (orjson.loads(body) for body in ranked_bodies(map(run.result_bytes, run.summaries)))
    sys.stdout.writelines(csv_lines(ids, results))


def write_table(run: ScreenRun, limit: int | None) -> None:
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
    shown = run.summaries if limit is None else run.summaries[:limit]
    for rank, s in enumerate(shown, start=1):
        table.add_row(
            str(rank),
            s.reference,
            s.mrn or "",
            f"[{STATUS_STYLE[s.status]}]{s.status}[/]",
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


# ---------------------------------------------------------------------------- explain
def print_checklist(result: dict[str, Any]) -> None:
    """One patient's result: the header, every criterion with its evidence, what to check."""
    _print_patient_head(result)
    for kind in ("inclusion", "exclusion"):
        out.print(f"\n[bold underline]{kind.title()} criteria[/]")
        for c in (c for c in result["criteria"] if c["kind"] == kind):
            manual = " [dim](manual)[/]" if c["assessment"] == "manual" else ""
            out.print(
                f"  {c['id']:<16} {MARK[c['verdict']]}{manual}  {c['reason']}", highlight=False
            )
            for e in c["evidence"]:
                out.print(f"      - {_evidence_line(e)}", highlight=False, style="dim")
            if c.get("score"):
                _print_score(c["score"])
    if result["next_steps"]:
        out.print("\n[bold underline]What to check next[/]")
        for step in result["next_steps"]:
            out.print(f"  - {step}", highlight=False)
    for problem in result.get("problems", []):
        err.print(f"[yellow]unreadable record:[/] {problem}", highlight=False)


def _print_patient_head(result: dict[str, Any]) -> None:
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
    elif result.get("next_step"):  # ranking.next_step, as every channel shows it
        out.print(f"  next step: {result['next_step']}", highlight=False)


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


# Each item's status in a few words (service/criteria/verdict.py ItemStatus).
ITEM_STATUS = {
    "counted": "[green]counted[/]",
    "lower_in_domain": "met, lower in domain",
    "withheld": "[yellow]withheld[/]",
    "undetermined": "[yellow]undetermined[/]",
    "not_met": "not met",
    "outside_window": "[dim]outside window[/]",
    "not_in_record": "[dim]not in record[/]",
}


def _print_score(score: dict[str, Any]) -> None:
    """A computed score under its criterion: total against the threshold, then one row per
    item the record holds (the entry criterion first); items with no record in one line."""
    window = (
        f"the {score['window_days']} days before as of"
        if score["window_days"] is not None
        else "any time before as of"
    )
    verdict = "[green]met[/]" if score["met"] else "not met"
    bound = "; a lower bound (a visit's items may add to it)" if score["lower_bound"] else ""
    out.print(
        f"      [bold]{escape(score['title'])}[/] computed from the record ({window}): "
        f"{score['total']} ({score['op']} {_number(score['threshold'])} needed): {verdict}{bound}",
        highlight=False,
    )
    items = ([score["entry"]] if score.get("entry") else []) + score["items"]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold dim")
    for column in ("item", "points", "status", "evidence", "why"):
        table.add_column(column, overflow="fold", justify="right" if column == "points" else "left")
    for item in items:
        if item["status"] == "not_in_record":
            continue
        table.add_row(
            escape(item["label"]),
            "entry" if item["domain"] == "entry" else str(item["weight"]),
            ITEM_STATUS.get(item["status"], item["status"]),
            escape(_score_evidence(item["evidence"])),
            escape(item["reason"]),
        )
    if table.row_count:
        out.print(Padding(table, (0, 0, 0, 8)))
    absent = [i["label"] for i in items if i["status"] == "not_in_record"]
    if absent:
        out.print(f"        not in the record: {', '.join(absent)}", highlight=False, style="dim")


def _score_evidence(evidence: list[dict[str, Any]]) -> str:
    """The item's first record as reference, date and value; how many more there are."""
    if not evidence:
        return ""
    e = evidence[0]
    value = None if e.get("value") is None else f"{e['value']} {e.get('unit') or ''}".strip()
    text = " ".join(str(p) for p in (e["reference"] or "derived", e.get("date"), value) if p)
    return text + (f" (+{len(evidence) - 1} more)" if len(evidence) > 1 else "")


def _number(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------- trials
def print_trials(trials: dict[str, tuple[TrialDefinition, Path]]) -> None:
    for trial_id, (definition, path) in trials.items():
        out.print(
            f"{trial_id}  v{definition.version}  {len(definition.criteria)} criteria  {path}",
            highlight=False,
        )


# ---------------------------------------------------------------------------- sweeps
def print_run_problems(run: RunInfo) -> None:
    for problem in run.problems[:MAX_ERRORS_SHOWN]:
        err.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    if run.counts["errors"] > MAX_ERRORS_SHOWN:
        err.print(
            f"[yellow]skipped:[/] ... and {run.counts['errors'] - MAX_ERRORS_SHOWN} more "
            f"(cohort-match runs --format json)",
            highlight=False,
        )


def print_run_counts(run: RunInfo) -> None:
    """A completed run in one line, and how a FHIR run got its data in another."""
    counts = run.counts
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


def print_since(previous: RunInfo, run: RunInfo, diff: DiffPublic) -> None:
    c = diff.counts
    out.print(
        f"Since run {previous.id} ({previous.as_of}): {c['new']} new candidate(s), "
        f"{c['dropped']} dropped out, {c['status']} changed status, {c['verdicts']} with "
        f"changed verdicts, {c.get('decided', 0)} with an open decision "
        f"(cohort-match diff {previous.id} {run.id}).",
        highlight=False,
    )


def print_funnel(funnel: AttritionPublic) -> None:
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


def print_runs(runs: Sequence[RunInfo]) -> None:
    table = Table(title="Sweep runs")
    for column in ("run", "trial", "as of", "status", "started", "took", "patients"):
        table.add_column(column, no_wrap=True)
    table.add_column("likely/possibly/ineligible", no_wrap=True)
    table.add_column("source", overflow="fold")
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
            f"[{RUN_STYLE[run.status]}]{run.status}[/]",
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


def print_diff(diff: DiffPublic) -> None:
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
        *diff.decided,
    ):
        table.add_row(
            change.change + (f" ({change.decision})" if change.decision else ""),
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
        f"but not candidates, {c['left']} non-candidates gone, {c.get('decided', 0)} held by an "
        f"open decision, {c['unchanged']} unchanged.",
        highlight=False,
    )


# ---------------------------------------------------------------------------- terminology
def print_change(change: Change) -> None:
    """What regenerating one value set adds and removes, and what it could not expand."""
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


def print_unmapped_json(trial: str, report: Report, rows: Sequence[UnmappedCode]) -> None:
    print_json(
        {
            "trial": trial,
            "resources": report.resources,
            "unmapped_resources": report.unmapped_resources,
            "codes": [dataclasses.asdict(row) for row in rows],
        }
    )


def print_unmapped_csv(rows: Sequence[UnmappedCode]) -> None:
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


def print_unmapped_table(trial: str, report: Report, rows: Sequence[UnmappedCode]) -> None:
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
