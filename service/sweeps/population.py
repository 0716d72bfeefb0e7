"""A FHIR source's population for a sweep, in full or only what changed.

incremental_base(...)    pure: the snapshot an incremental run can start from, or why the
                         run exports in full (one reason per case)
fetch_population(...)    the population into a new snapshot, by `exporter`
export_population(...)   the default exporter: Bulk export, or searches where the server
                         has no $export; with `since`, deletions from the manifest and
                         type-level history, or a full export when the history says the
                         change is too big for that to pay
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.config import Settings
from service.criteria.model import TrialDefinition
from service.errors import FhirFatalError
from service.fetching import plan_for
from service.fhir import FetchPlan, FhirClient
from service.fhir.bulk import (
    ExportProgress,
    ExportResult,
    export_or_search,
    plan_types,
)
from service.fhir.history import changes_since, deleted_during
from service.mappers import relevant
from service.sweeps.heartbeat import Progress
from service.sweeps.snapshot import SnapshotInfo, Snapshots, snapshot_key
from service.sweeps.store import COMPLETED, RunInfo, RunMode
from service.terminology import Terminology
from service.upstream import fhir_auth

__all__ = [
    "Export",
    "Exporter",
    "Fetched",
    "export_population",
    "fetch_population",
    "incremental_base",
]

log = logging.getLogger("service.sweeps.runner")


@dataclass
class Export:
    """What an exporter wrote: the files (and the export's issues), and the deletions."""

    result: ExportResult
    deleted: frozenset[str]  # `Type/id` removed since the snapshot (manifest and history)
    problems: list[str]
    # Asked for what changed, the exporter exported in full instead, for this reason
    full_instead: str | None = None


# (run, plan, level, out, progress, since) -> Export: the population of `run.source` into
# `out`; with `since`, only what changed after that snapshot, and what was deleted (or all of
# it, when that costs less: `Export.full_instead` says why).
Exporter = Callable[[RunInfo, FetchPlan, str, Path, Progress, SnapshotInfo | None], Export]


@dataclass
class Fetched:
    """The population of a run, ready to screen, and how it was obtained."""

    data: Path
    mode: RunMode
    transaction_time: dt.datetime | None = None
    problems: list[str] = field(default_factory=list)
    errors: int = 0
    snapshots: Snapshots | None = None  # promote this run's snapshot once it completed


def incremental_base(
    *,
    requested_mode: str | None,
    incremental: bool,
    export_level: str,
    latest: tuple[Path, SnapshotInfo] | None,
    earlier: RunInfo | None,
    now: dt.datetime,
    full_after_days: float,
) -> tuple[tuple[Path, SnapshotInfo] | None, str]:
    """The snapshot an incremental run can start from, or None and why the run exports in
    full. `latest` is the newest snapshot for this source, trial and code tables; `earlier`
    the run that made it (None: that run is gone)."""
    if requested_mode == "full":
        return None, "full export requested"
    if not incremental:
        return None, "incremental sweeps are off (COHORT_MATCH_SWEEP_INCREMENTAL)"
    if export_level == "group":
        # a patient who joined the Group brings records older than `_since`
        return None, "Group-level exports are always full"
    if latest is None:
        return None, "no snapshot of an earlier run with this source, trial and code tables"
    info = latest[1]
    if earlier is None:
        return None, f"the run of the snapshot ({info.run_id}) is gone"
    if earlier.status != COMPLETED or earlier.transaction_time != info.transaction_time:
        return None, f"the snapshot of run {info.run_id} does not match its run"
    if not info.reusable:
        return None, f"run {info.run_id} received records it could not identify"
    age = now - info.full_export_time
    if age > dt.timedelta(days=full_after_days):
        return None, (
            f"the last full export is {age.days} days old "
            f"(COHORT_MATCH_SWEEP_FULL_AFTER_DAYS={full_after_days:g})"
        )
    return latest, ""


def fetch_population(
    run: RunInfo,
    trial: TrialDefinition,
    terms: Terminology,
    settings: Settings,
    exporter: Exporter,
    choose: Callable[[Snapshots], tuple[tuple[Path, SnapshotInfo] | None, str]],
    tmp: Path,
    tracker: Progress,
) -> Fetched:
    """The population from the FHIR server into a new snapshot: what changed since the
    last run's snapshot when one can be used, else a full export."""
    level: str = settings.sweep_export_level
    if level == "group":
        assert settings.sweep_export_group
        level = settings.sweep_export_group
    plan = plan_for(trial, terms)
    # the shared types too: a snapshot made before Medications were exported lacks them
    types = (*plan.other_types, *plan.shared_types)
    key = snapshot_key(run.source, level, trial.id, trial.version, terms.version, types)
    snapshots = Snapshots(settings.snapshot_root(), trial.id, key)
    base, why_full = choose(snapshots)
    builder = snapshots.start(run.id)
    try:
        delta: Export | None = None
        if base is not None:
            try:
                delta = exporter(run, plan, level, tmp / "delta", tracker, base[1])
            except FhirFatalError as exc:
                if exc.http_status not in (400, 422):
                    raise
                # e.g. a server that refuses _since (or _lastUpdated) with strict handling
                log.warning("sweep run %d: incremental export refused: %s", run.id, exc)
                why_full = f"the server refused the incremental request: {exc.message}"
                delta = None
            if delta is not None and delta.result.deleted_unreadable:
                why_full = "the server's list of deleted resources was unreadable"
                delta = None
        exported_in_full = None
        if delta is not None and delta.full_instead is not None:
            why_full, exported_in_full, delta = delta.full_instead, delta, None
        export = (
            delta or exported_in_full or exporter(run, plan, level, tmp / "export", tracker, None)
        )
        tracker("snapshot", 0, 0)
        counts = builder.take(
            export.result.out_dir,
            functools.partial(relevant, terms=terms),
            base[0] if delta is not None and base is not None else None,
            export.deleted,
        )
        transaction_time = export.result.transaction_time
        if delta is not None and base is not None:
            full_time = base[1].full_export_time
            mode = RunMode(
                "incremental",
                based_on=base[1].run_id,
                changes={"since": base[1].transaction_time.isoformat(), **counts.as_dict()},
            )
        else:
            full_time = transaction_time
            mode = RunMode("full", changes={"reason": why_full, **counts.as_dict()})
        builder.finish(
            SnapshotInfo(
                run.id,
                key,
                transaction_time,
                full_time,
                counts.kept + counts.carried,
                reusable=counts.untracked == 0,
            )
        )
    except BaseException:
        snapshots.discard(run.id)
        raise
    problems = [*export.problems, *(str(e) for e in builder.errors)]
    return Fetched(
        builder.path,
        mode,
        transaction_time=transaction_time,
        problems=problems,
        errors=export.result.issue_count + counts.unreadable,
        snapshots=snapshots,
    )


async def _then(exporting: Awaitable[ExportResult], tracker: Progress) -> ExportResult:
    """The export, then the progress says what the run still waits for: the history."""
    result = await exporting
    tracker("history", 0, 0)
    return result


async def _too_big(client: FhirClient, plan: FetchPlan, since: SnapshotInfo) -> str | None:
    """Why a full export costs less than reading what changed since `since`, or None.

    An incremental run reads every version written since (the export's delta, then the
    history for deletions: twice the change), a full export the population once. When the
    history holds more versions than the snapshot has records (an import of new patients,
    say), the change is no longer small: after adding 100 patients to 100 on sekmet-fhir, the
    incremental run took 1.2-1.9 times as long as a full export even with the history read
    beside the export (scripts/bench_incremental.py). A server that gives no count keeps the
    incremental run."""
    changes = await changes_since(client, plan_types(plan), since.transaction_time)
    if changes is None or changes <= since.resources:
        return None
    return (
        f"the server's history holds {changes} changes since run {since.run_id}, more than "
        f"the {since.resources} records of its snapshot: a full export costs less"
    )


def export_population(
    settings: Settings,
    run: RunInfo,
    plan: FetchPlan,
    level: str,
    out: Path,
    tracker: Progress,
    since: SnapshotInfo | None,
) -> Export:
    """Bulk export (or searches) of what the trial needs into `out`; with `since`, only
    what changed after that snapshot, and what was deleted.

    Issues in the export's error files are kept with the run as problems and counted as
    errors; the run still completes (as a screen of files does with unreadable records).
    """

    def report(step: ExportProgress) -> None:
        tracker("export", step.done, step.total)

    async def run_export() -> Export:
        async with FhirClient(
            run.source,
            auth=fhir_auth(settings, run.source),
            timeout_s=settings.fhir_timeout_s,
            page_size=settings.fhir_page_size,
        ) as client:
            moment, instead = since, None
            if since is not None:
                tracker("history", 0, 0)  # counting the changes
                instead = await _too_big(client, plan, since)
                moment = None if instead else since
                tracker("export", 0, 0)
            if moment is None:
                result = await export_or_search(client, out, plan, level=level, progress=report)
                deleted = set(result.deleted)
            else:
                exporting = export_or_search(
                    client, out, plan, level=level, since=moment.transaction_time, progress=report
                )
                # history is read while the export runs (service/fhir/history.py)
                result, history = await deleted_during(
                    client, plan_types(plan), moment.transaction_time, _then(exporting, tracker)
                )
                deleted = {*result.deleted, *history.references}
        log.info(
            "sweep run %d: %s%s gave %s, %d deletion(s)",
            run.id,
            result.method,
            " since " + moment.transaction_time.isoformat() if moment else "",
            result.counts() or "nothing",
            len(deleted),
        )
        return Export(result, frozenset(deleted), [str(i) for i in result.issues], instead)

    tracker("export", 0, 0)
    return asyncio.run(run_export())
