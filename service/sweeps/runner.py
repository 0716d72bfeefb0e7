"""Run a sweep: claim the trial, get the population, screen it, store the results, complete.

    begin()    claims the trial in the store (SweepConflict if a live sweep of it runs) and
               records the run: trial and its version, code tables' version, as_of, source
    execute()  gets the population (a directory as it is, or from a FHIR server by Bulk
               export, by search where the server has no $export: in full, or only what
               changed since the last run's snapshot, see below), screens it
               with service.screening.screen (worker processes, bounded memory), stores the
               ranked results in batches while counting the funnel, and completes the run
    sweep()    both, in the calling thread (the CLI)

While a run executes, a heartbeat thread records that it is alive (with its progress) and
picks up a cancel request from the store. The run ends `completed`, `failed` (with the error)
or `cancelled`; a process killed outright leaves it `running` until the next claim of the
trial finds the process gone (see service/sweeps/store.py).

From a FHIR server, a run keeps a snapshot of what the trial reads (service/sweeps/snapshot.py).
The next run of the same source, trial version and code tables asks only for what changed
(`_since` the snapshot's transactionTime; deletions from the manifest's `deleted` files and
type-level history), merges it into a new snapshot and screens everyone again at its own
as_of, so a patient whose records did not change still gets today's verdicts (age, windows).
A run exports in full when asked (`full=True`), when there is no usable snapshot, at Group
level, when the deletions list was unreadable, or when the last full export is older than
COHORT_MATCH_SWEEP_FULL_AFTER_DAYS. The run records which (`mode`, `based_on`, `changes`).

`BackgroundSweeps` is the API's and the scheduler's way in: the run is claimed in the caller
(so a conflict is an immediate 409) and executed on a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from service.config import Settings
from service.criteria.model import TrialDefinition, TrialError
from service.errors import (
    BadRequest,
    ControlFlow,
    FhirError,
    FhirFatalError,
    NotFound,
    ServiceError,
)
from service.fetching import plan_for
from service.fhir import FetchPlan, FhirClient
from service.fhir.bulk import ExportResult
from service.mappers import relevant
from service.screening import ScreenRun, screen
from service.spool import new_spool, remove_stale, spool_root
from service.sweeps.report import FunnelCounter, diff_runs, fhir_bundle
from service.sweeps.snapshot import SnapshotInfo, Snapshots, snapshot_key
from service.sweeps.store import (
    COMPLETED,
    ResultRow,
    RunInfo,
    RunMode,
    RunSpec,
    SweepStore,
)
from service.terminology import Terminology, TerminologyError
from service.trials import TrialNotFound, find_trial
from service.upstream import fhir_auth

__all__ = [
    "BackgroundSweeps",
    "Export",
    "Exporter",
    "Progress",
    "Source",
    "SweepRunner",
    "configured_source",
    "fhir_auth",
]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # stage, done, total
BACKGROUND_THREADS = 4  # sweeps of different trials at once, per process


@dataclass(frozen=True)
class Source:
    """Where a sweep reads the population: a directory (or file) or a FHIR server."""

    kind: Literal["files", "fhir"]
    location: str

    @classmethod
    def files(cls, path: Path) -> Source:
        if not path.exists():
            raise BadRequest(f"no such file or directory: {path}")
        return cls("files", str(path.resolve()))

    @classmethod
    def fhir(cls, url: str) -> Source:
        if not url.lower().startswith(("http://", "https://")):
            raise BadRequest(f"--source must be a FHIR base URL (http or https), got {url!r}")
        return cls("fhir", url.rstrip("/"))


def configured_source(settings: Settings) -> Source | None:
    """The source of API and scheduled sweeps: COHORT_MATCH_SWEEP_DATA_DIR, else the FHIR
    server; None when neither is configured."""
    if settings.sweep_data_dir is not None:
        return Source.files(settings.sweep_data_dir)
    if settings.fhir_base_url:
        return Source.fhir(settings.fhir_base_url)
    return None


class Cancelled(ControlFlow):
    """The run was asked to stop (or stopped being ours)."""


class _Tracker:
    """Progress in memory (the heartbeat writes it), the caller's callback, and the cancel
    check at every step."""

    def __init__(self, progress: Progress | None, cancel: threading.Event) -> None:
        self.progress = progress
        self.cancel = cancel
        self.stage, self.done, self.total = "queued", 0, 0
        self.reason = "cancelled"

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total
        if self.progress is not None:
            self.progress(stage, done, total)
        if self.cancel.is_set():
            raise Cancelled(self.reason)


class _Heartbeat(threading.Thread):
    def __init__(self, store: SweepStore, run_id: int, interval: float, tracker: _Tracker) -> None:
        super().__init__(name=f"sweep-{run_id}-heartbeat", daemon=True)
        self.store, self.run_id, self.interval, self.tracker = store, run_id, interval, tracker
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            tracker = self.tracker
            try:
                state = self.store.heartbeat(
                    self.run_id, tracker.stage, tracker.done, tracker.total
                )
            except Exception as exc:  # a database hiccup must not kill the sweep
                log.warning("sweep run %d: heartbeat not written: %s", self.run_id, exc)
                continue
            if state != "running":
                tracker.reason = (
                    "cancel requested" if state == "cancel" else "run taken over as abandoned"
                )
                tracker.cancel.set()
                return

    def stop(self) -> None:
        self.halt.set()
        self.join()


@dataclass
class Export:
    """What an exporter wrote: the files (and the export's issues), and the deletions."""

    result: ExportResult
    deleted: frozenset[str]  # `Type/id` removed since the snapshot (manifest and history)
    problems: list[str]


# (run, plan, level, out, progress, since) -> Export: the population of `run.source` into
# `out`; with `since`, only what changed after that snapshot, and what was deleted.
Exporter = Callable[[RunInfo, FetchPlan, str, Path, Progress, SnapshotInfo | None], Export]


@dataclass
class _Fetched:
    """The population of a run, ready to screen, and how it was obtained."""

    data: Path
    mode: RunMode
    transaction_time: dt.datetime | None = None
    problems: list[str] = field(default_factory=list)
    errors: int = 0
    snapshots: Snapshots | None = None  # promote this run's snapshot once it completed


class SweepRunner:
    """Runs sweeps for one deployment (its Settings) into one store. `exporter` fetches a FHIR
    source's population (default: Bulk export, or searches where the server has none)."""

    def __init__(
        self, settings: Settings, store: SweepStore, exporter: Exporter | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.exporter: Exporter = exporter or self._export
        self._terms: Terminology | None = None
        self._lock = threading.Lock()

    def terms(self) -> Terminology:
        with self._lock:
            if self._terms is None:
                self._terms = Terminology.load(
                    self.settings.terminology_dir, self.settings.site_code_map
                )
            return self._terms

    def _trial(self, trial_id: str) -> tuple[TrialDefinition, Path]:
        try:
            return find_trial(self.settings.trials_dir, trial_id)
        except TrialNotFound as exc:
            raise NotFound(str(exc)) from None
        except TrialError as exc:
            raise ServiceError(str(exc)) from None

    # ------------------------------------------------------------ begin
    def begin(
        self,
        trial_id: str,
        as_of: dt.date,
        source: Source,
        requested_by: str,
        *,
        full: bool = False,
    ) -> int:
        """Claim the trial and record the run; returns its id (SweepConflict if one runs).
        `full`: export everything even where an incremental run could start from a snapshot."""
        trial, _ = self._trial(trial_id)
        try:
            terms = self.terms()
        except TerminologyError as exc:
            raise ServiceError(str(exc)) from None
        spec = RunSpec(
            trial_id=trial.id,
            trial_version=trial.version,
            terminology_version=terms.version,
            as_of=as_of,
            source_kind=source.kind,
            source=source.location,
            requested_by=requested_by,
            criteria=[
                {"id": c.id, "kind": c.kind, "assessment": c.assessment, "text": c.text}
                for c in trial.criteria
            ],
            requested_mode="full" if full else "auto",
        )
        run_id = self.store.claim(spec, stale_after_s=self.settings.sweep_stale_after_s)
        log.info("sweep run %d of %s claimed (%s %s)", run_id, trial.id, source.kind, as_of)
        return run_id

    def sweep(
        self,
        trial_id: str,
        as_of: dt.date,
        source: Source,
        requested_by: str,
        *,
        full: bool = False,
        progress: Progress | None = None,
    ) -> RunInfo:
        run_id = self.begin(trial_id, as_of, source, requested_by, full=full)
        return self.execute(run_id, progress=progress)

    # ------------------------------------------------------------ execute
    def execute(
        self,
        run_id: int,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RunInfo:
        """Run a claimed sweep to its end; returns the run as it ended. Errors end the run
        `failed` (logged with the traceback); KeyboardInterrupt ends it `cancelled` and is
        raised again."""
        run = self.store.get(run_id)
        tracker = _Tracker(progress, cancel or threading.Event())
        heartbeat = _Heartbeat(self.store, run_id, self.settings.sweep_heartbeat_s, tracker)
        heartbeat.start()
        try:
            self._execute(run, tracker)
        except Cancelled as exc:
            log.warning("sweep run %d cancelled: %s", run_id, exc)
            self.store.finish(run_id, "cancelled", str(exc))
        except KeyboardInterrupt:
            self.store.finish(run_id, "cancelled", "interrupted (Ctrl-C)")
            raise
        except ServiceError as exc:  # an expected failure (FHIR server, trial file): one line
            log.warning("sweep run %d failed: %s", run_id, exc.message)
            self.store.finish(run_id, "failed", _one_line(exc))
        except Exception as exc:  # a bug or the environment: with the traceback
            log.exception("sweep run %d failed", run_id)
            self.store.finish(run_id, "failed", _one_line(exc))
        finally:
            heartbeat.stop()
        ended = self.store.get(run_id)
        if ended.status == COMPLETED:
            self._after_completion(ended)
        return self.store.get(run_id)

    def _execute(self, run: RunInfo, tracker: _Tracker) -> None:
        trial, trial_path = self._trial(run.trial_id)
        if trial.version != run.trial_version:
            raise ServiceError(
                f"trial file {trial_path} changed to version {trial.version} after the run "
                f"was started with {run.trial_version}"
            )
        # Owner-only, under COHORT_MATCH_SPOOL_DIR, named with our pid; spools of killed
        # sweeps (their process gone) are removed first (service/spool.py).
        root = spool_root(self.settings.spool_dir)
        remove_stale(root)
        with new_spool(root, "sweep") as tmp:
            if run.source_kind == "files":
                fetched = _Fetched(Path(run.source), RunMode("files"))
            else:
                fetched = self._fetch(run, trial, Path(tmp), tracker)
            try:
                self._screen_and_store(run, trial_path, fetched, Path(tmp), tracker)
            except BaseException:
                if fetched.snapshots is not None:
                    fetched.snapshots.discard(run.id)
                raise
        if fetched.snapshots is not None:
            try:
                fetched.snapshots.promote(run.id)
            except OSError:  # the run stands; the next one exports in full
                log.exception("sweep run %d: its snapshot could not be kept", run.id)
        log.info("sweep run %d of %s completed (%s)", run.id, run.trial_id, fetched.mode.mode)

    def _screen_and_store(
        self, run: RunInfo, trial_path: Path, fetched: _Fetched, tmp: Path, tracker: _Tracker
    ) -> None:
        tracker("read", 0, 0)
        # Our own spool directory: screen() does not remove the one it makes itself when
        # an exception (a cancel raised from `progress`) leaves it half way.
        spool = tmp / "spool"
        spool.mkdir()
        screened = screen(
            fetched.data,
            trial_path,
            self.settings.terminology_dir,
            run.as_of,
            site_map=self.settings.site_code_map,
            workers=self.settings.sweep_workers,
            spool=spool,
            progress=tracker,
            by_reference=fetched.snapshots is not None,
            mrn_type=self.settings.mrn_type,
        )
        try:
            funnel = self._store_results(run, screened, tracker)
            counts = screened.counts()
            counts["errors"] += fetched.errors
            problems = [*fetched.problems, *(str(e) for e in screened.errors)]
            self.store.complete(
                run.id,
                counts=counts,
                attrition=funnel.result(run).model_dump(mode="json", by_alias=True),
                problems=problems,
                transaction_time=fetched.transaction_time,
                mode=fetched.mode,
            )
        finally:
            screened.close()

    # ------------------------------------------------------------ FHIR: full or incremental
    def _fetch(
        self, run: RunInfo, trial: TrialDefinition, tmp: Path, tracker: _Tracker
    ) -> _Fetched:
        """The population from the FHIR server into a new snapshot: what changed since the
        last run's snapshot when one can be used, else a full export."""
        settings, terms = self.settings, self.terms()
        level: str = settings.sweep_export_level
        if level == "group":
            assert settings.sweep_export_group
            level = settings.sweep_export_group
        plan = plan_for(trial, terms)
        key = snapshot_key(
            run.source, level, trial.id, trial.version, terms.version, plan.other_types
        )
        snapshots = Snapshots(settings.snapshot_root(), trial.id, key)
        base, why_full = self._base(run, snapshots)
        builder = snapshots.start(run.id)
        try:
            delta: Export | None = None
            if base is not None:
                try:
                    delta = self.exporter(run, plan, level, tmp / "delta", tracker, base[1])
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
            export = delta or self.exporter(run, plan, level, tmp / "export", tracker, None)
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
        return _Fetched(
            builder.path,
            mode,
            transaction_time=transaction_time,
            problems=problems,
            errors=export.result.issue_count + counts.unreadable,
            snapshots=snapshots,
        )

    def _base(
        self, run: RunInfo, snapshots: Snapshots
    ) -> tuple[tuple[Path, SnapshotInfo] | None, str]:
        """The snapshot an incremental run can start from, or None and why not."""
        if run.requested_mode == "full":
            return None, "full export requested"
        if not self.settings.sweep_incremental:
            return None, "incremental sweeps are off (COHORT_MATCH_SWEEP_INCREMENTAL)"
        if self.settings.sweep_export_level == "group":
            # a patient who joined the Group brings records older than `_since`
            return None, "Group-level exports are always full"
        found = snapshots.latest()
        if found is None:
            return None, "no snapshot of an earlier run with this source, trial and code tables"
        info = found[1]
        try:
            earlier = self.store.get(info.run_id)
        except NotFound:
            return None, f"the run of the snapshot ({info.run_id}) is gone"
        if earlier.status != COMPLETED or earlier.transaction_time != info.transaction_time:
            return None, f"the snapshot of run {info.run_id} does not match its run"
        if not info.reusable:
            return None, f"run {info.run_id} received records it could not identify"
        age = dt.datetime.now(dt.UTC) - info.full_export_time
        if age > dt.timedelta(days=self.settings.sweep_full_after_days):
            return None, (
                f"the last full export is {age.days} days old "
                f"(COHORT_MATCH_SWEEP_FULL_AFTER_DAYS={self.settings.sweep_full_after_days:g})"
            )
        return found, ""

    def _export(
        self,
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
        from service.fhir.bulk import ExportProgress, export_or_search, fhir_instant, plan_types
        from service.fhir.history import deleted_since

        settings = self.settings
        moment = since.transaction_time if since is not None else None

        def report(step: ExportProgress) -> None:
            tracker("export", step.done, step.total)

        async def run_export() -> Export:
            async with FhirClient(
                run.source,
                auth=fhir_auth(settings, run.source),
                timeout_s=settings.fhir_timeout_s,
                page_size=settings.fhir_page_size,
            ) as client:
                result = await export_or_search(
                    client, out, plan, level=level, since=moment, progress=report
                )
                deleted = set(result.deleted)
                if moment is not None:
                    history = await deleted_since(
                        client, plan_types(plan), moment, fhir_instant(moment)
                    )
                    deleted |= history.references
            log.info(
                "sweep run %d: %s%s gave %s, %d deletion(s)",
                run.id,
                result.method,
                " since " + moment.isoformat() if moment else "",
                result.counts() or "nothing",
                len(deleted),
            )
            return Export(result, frozenset(deleted), [str(i) for i in result.issues])

        tracker("export", 0, 0)
        return asyncio.run(run_export())

    def _store_results(self, run: RunInfo, screened: ScreenRun, tracker: _Tracker) -> FunnelCounter:
        """Results in rank order, in batches (one transaction each); the funnel on the way."""
        funnel = FunnelCounter(run.criteria)
        total = len(screened.summaries)
        size = self.settings.sweep_batch_size
        batch: list[ResultRow] = []
        stored = 0
        tracker("store", 0, total)
        for rank, summary in enumerate(screened.summaries, start=1):
            body = screened.result_bytes(summary)
            result = orjson.loads(body)
            verdicts = {c["id"]: c["verdict"] for c in result["criteria"]}
            funnel.add(verdicts, summary.status)
            batch.append(
                ResultRow(
                    patient=summary.reference,
                    rank=rank,
                    status=summary.status,
                    score=summary.score,
                    fails=summary.fails,
                    unknowns=summary.unknowns,
                    verdicts=verdicts,
                    result=body[:-1] + b',"rank":' + str(rank).encode() + b"}",
                )
            )
            if len(batch) >= size or rank == total:
                stored += len(batch)
                self.store.add_results(run.id, batch, stored=stored)
                batch = []
                tracker("store", stored, total)
        return funnel

    # ------------------------------------------------------------ after completion
    def _after_completion(self, run: RunInfo) -> None:
        try:
            purged = self.store.purge_results(run.trial_id, self.settings.sweep_keep_results)
            if purged:
                log.info("sweep results of runs %s removed (older than the newest kept)", purged)
        except Exception:
            log.exception("sweep run %d: purging old results failed", run.id)
        if self.settings.sweep_write_back:
            try:
                outcome = asyncio.run(self.write_back(run))
            except Exception as exc:
                log.exception("sweep run %d: write-back failed", run.id)
                outcome = f"failed: {_one_line(exc)}"
            self.store.set_write_back(run.id, outcome)

    async def write_back(self, run: RunInfo) -> str:
        """POST the run's FHIR transaction Bundle to the configured FHIR server, once (through
        `FhirClient.transaction`, which never retries a write); patients who were candidates
        in the previous completed run and are ineligible now get their ResearchSubject set to
        `ineligible`."""
        base = self.settings.fhir_base_url
        assert base is not None
        dropped: list[str] = []
        previous = self.store.previous_completed(run)
        if previous is not None and previous.has_results:
            diff = diff_runs(self.store, previous, run)
            dropped = [c.patient for c in diff.dropped if c.after == "ineligible"]
        trial, _ = self._trial(run.trial_id)
        bundle = fhir_bundle(self.store, run, title=trial.title, dropped=dropped)
        async with FhirClient(
            base, auth=fhir_auth(self.settings, base), timeout_s=self.settings.fhir_timeout_s
        ) as client:
            try:
                await client.transaction(bundle)
            except FhirError as exc:
                if exc.http_status is None:
                    raise
                raise type(exc)(
                    f"the FHIR server answered {exc.http_status} to the write-back: {exc.detail}",
                    url=base,
                    http_status=exc.http_status,
                    outcome=exc.outcome,
                ) from exc
        return f"ok: {len(bundle['entry'])} resources written to {base}"


def _one_line(exc: BaseException) -> str:
    """The error as a run records it: our own errors by their message, others with their
    type (an OSError's message alone can be cryptic)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, ServiceError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}".rstrip(": ")


class BackgroundSweeps:
    """Sweeps started by the API or the schedule: claimed in the caller, executed on a thread
    of this process. `close()` asks running sweeps to stop and waits for them."""

    def __init__(
        self,
        settings: Settings,
        store: SweepStore | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or SweepStore(settings.database_url)
        self.runner = SweepRunner(settings, self.store, exporter)
        self._pool = ThreadPoolExecutor(BACKGROUND_THREADS, thread_name_prefix="sweep")
        self._active: dict[int, tuple[threading.Event, Future[RunInfo]]] = {}
        self._lock = threading.Lock()

    def source(self) -> Source:
        source = configured_source(self.settings)
        if source is None:
            raise BadRequest(
                "no sweep source configured: set COHORT_MATCH_SWEEP_DATA_DIR or "
                "COHORT_MATCH_FHIR_BASE_URL"
            )
        return source

    def start(
        self, trial_id: str, as_of: dt.date, requested_by: str, *, full: bool = False
    ) -> RunInfo:
        run_id = self.runner.begin(trial_id, as_of, self.source(), requested_by, full=full)
        cancel = threading.Event()
        with self._lock:
            future = self._pool.submit(self._execute, run_id, cancel)
            self._active[run_id] = (cancel, future)
        return self.store.get(run_id)

    def _execute(self, run_id: int, cancel: threading.Event) -> RunInfo:
        try:
            return self.runner.execute(run_id, cancel=cancel)
        except Exception:
            log.exception("sweep run %d: could not be ended cleanly", run_id)
            raise
        finally:
            with self._lock:
                self._active.pop(run_id, None)

    def cancel(self, run_id: int) -> RunInfo:
        run = self.store.request_cancel(run_id)
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:
            active[0].set()  # at once here; another process's sweep sees it at its heartbeat
        return run

    def wait(self, run_id: int, timeout: float | None = None) -> RunInfo:
        """Wait for a sweep started here to end (tests, shutdown)."""
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:
            active[1].result(timeout)
        return self.store.get(run_id)

    def close(self) -> None:
        with self._lock:
            for cancel, _ in self._active.values():
                cancel.set()
        self._pool.shutdown(wait=True)
        self.store.close()
