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

The seams, one module each: source.py (where the population is), heartbeat.py (progress,
cancel), population.py (full or incremental, pure choice; the default exporter),
write_back.py, background.py (`BackgroundSweeps`, the API's and the scheduler's way in: the
run is claimed in the caller, so a conflict is an immediate 409, and executed on a thread).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
from pathlib import Path

import orjson

from service.clock import Clock
from service.config import Settings
from service.criteria.model import TrialDefinition, TrialError
from service.errors import NotFound, ServiceError
from service.fhir import FetchPlan
from service.screening import Screener, ScreenOptions, ScreenRun, screen
from service.spool import new_spool, remove_stale, spool_root
from service.sweeps.heartbeat import Cancelled, Heartbeat, Progress, Tracker
from service.sweeps.population import (
    Export,
    Exporter,
    Fetched,
    export_population,
    fetch_population,
    incremental_base,
)
from service.sweeps.report import FunnelCounter
from service.sweeps.snapshot import SnapshotInfo, Snapshots
from service.sweeps.source import Source, configured_source
from service.sweeps.store import (
    COMPLETED,
    ResultRow,
    RunInfo,
    RunMode,
    RunSpec,
    SweepStore,
)
from service.sweeps.write_back import Worklist, write_back
from service.terminology import Terminology, TerminologyError
from service.trials import TrialNotFound, find_trial
from service.upstream import fhir_auth

# Names callers have imported from here; each now lives in the module named above.
__all__ = [
    "Cancelled",
    "Export",
    "Exporter",
    "Progress",
    "Source",
    "SweepRunner",
    "configured_source",
    "fhir_auth",
]

log = logging.getLogger(__name__)
_Tracker = Tracker  # the name _store_results is annotated with


class SweepRunner:
    """Runs sweeps for one deployment (its Settings) into one store. `exporter` fetches a FHIR
    source's population (default: Bulk export, or searches where the server has none)."""

    def __init__(
        self,
        settings: Settings,
        store: SweepStore,
        exporter: Exporter | None = None,
        screener: Screener = screen,  # or service.spark.spark_screen
        *,
        worklist: Worklist | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.exporter: Exporter = exporter or self._export
        self.screener = screener
        self._worklist = worklist
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
        tracker = Tracker(progress, cancel or threading.Event())
        heartbeat = Heartbeat(self.store, run_id, self.settings.sweep_heartbeat_s, tracker)
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

    def _execute(self, run: RunInfo, tracker: Tracker) -> None:
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
                fetched = Fetched(Path(run.source), RunMode("files"))
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
        self, run: RunInfo, trial_path: Path, fetched: Fetched, tmp: Path, tracker: Tracker
    ) -> None:
        tracker("read", 0, 0)
        # Our own spool directory: screen() does not remove the one it makes itself when
        # an exception (a cancel raised from `progress`) leaves it half way.
        spool = tmp / "spool"
        spool.mkdir()
        screened = self.screener(
            fetched.data,
            trial_path,
            self.settings.terminology_dir,
            run.as_of,
            options=ScreenOptions(
                workers=self.settings.sweep_workers,
                spool=spool,
                by_reference=fetched.snapshots is not None,
                progress=tracker,
            ),
            site_map=self.settings.site_code_map,
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
    def _fetch(self, run: RunInfo, trial: TrialDefinition, tmp: Path, tracker: Tracker) -> Fetched:
        """The population from the FHIR server into a new snapshot: what changed since the
        last run's snapshot when one can be used, else a full export."""
        choose = functools.partial(self._base, run)
        return fetch_population(
            run, trial, self.terms(), self.settings, self.exporter, choose, tmp, tracker
        )

    def _base(
        self, run: RunInfo, snapshots: Snapshots
    ) -> tuple[tuple[Path, SnapshotInfo] | None, str]:
        """The snapshot an incremental run can start from, or None and why not
        (service/sweeps/population.py decides; this reads what it decides on)."""
        latest = snapshots.latest()
        earlier = None
        if latest is not None:
            try:
                earlier = self.store.get(latest[1].run_id)
            except NotFound:
                earlier = None
        return incremental_base(
            requested_mode=run.requested_mode,
            incremental=self.settings.sweep_incremental,
            export_level=self.settings.sweep_export_level,
            latest=latest,
            earlier=earlier,
            now=dt.datetime.now(dt.UTC),
            full_after_days=self.settings.sweep_full_after_days,
        )

    def _export(
        self,
        run: RunInfo,
        plan: FetchPlan,
        level: str,
        out: Path,
        tracker: Progress,
        since: SnapshotInfo | None,
    ) -> Export:
        """The default exporter (service/sweeps/population.py)."""
        return export_population(self.settings, run, plan, level, out, tracker, since)

    def _store_results(self, run: RunInfo, screened: ScreenRun, tracker: _Tracker) -> FunnelCounter:
        """Results in rank order, in batches (one transaction each); the funnel on the way."""
        from service.ranked_output import rank_body

        funnel = FunnelCounter(run.criteria)
        total = len(screened.summaries)
        size = self.settings.sweep_batch_size
        batch: list[ResultRow] = []
        stored = 0
        tracker("store", 0, total)
        for rank, summary in enumerate(screened.summaries, start=1):
            body = rank_body(screened.result_bytes(summary), rank)
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
                    result=body,
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

    def worklist(self) -> Worklist:
        """The decisions and what is known of the ResearchSubjects: the app's (handed in), or
        on the sweep store's engine with the configured clock (the CLI)."""
        with self._lock:
            if self._worklist is None:
                self._worklist = Worklist.on(self.store.engine, Clock.of(self.settings))
            return self._worklist

    async def write_back(self, run: RunInfo) -> str:
        """Read back, then the run's ResearchSubjects to the configured FHIR server, the
        coordinators' decisions applied (sweeps/write_back.py)."""
        trial, _ = self._trial(run.trial_id)
        return await write_back(self.settings, self.store, run, trial.title, self.worklist())


def _one_line(exc: BaseException) -> str:
    """The error as a run records it: our own errors by their message, others with their
    type (an OSError's message alone can be cryptic)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, ServiceError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}".rstrip(": ")
