"""Persisted sweep runs: every query sweeps make.

    tables.py     sweep_runs, sweep_results (the models)
    records.py    RunSpec, RunInfo, ResultRow, ... and row -> record
    liveness.py   whether a running run is abandoned (pure given the time)
    store.py      SweepStore, its errors; re-exports the names above for existing callers
                  (the `X as X` imports)

The schema is the database's one Alembic history (service/db/migrations); `SweepStore`
applies `upgrade head` when it opens the database (service/db/migrate.py), under a lock so
that two processes starting at once do not race.

Crash safety, in the order a run goes:

- claim: one transaction marks abandoned runs of the trial failed and inserts the new run as
  `running`. A unique partial index on (trial_id) WHERE status = 'running' makes a second
  running run of one trial impossible, whoever inserts it (-> SweepConflict).
- results are inserted in batches, each batch in one transaction with the progress, and only
  while the run is still `running`; a crash leaves a `running` run with some results.
- complete: one transaction checks that every ranked result is stored, then sets the counts,
  the funnel and `completed`. Nothing else ever sets `completed`.
- a run whose process is gone (same host: the pid no longer exists; any host: no heartbeat
  for `stale_after_s`) is marked failed by the next claim of its trial; results of failed and
  cancelled runs are deleted. Only completed runs (and the one running) have results.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.db import Base as Base
from service.db import create_engine, write_transaction
from service.db.migrate import MIGRATIONS as MIGRATIONS
from service.db.migrate import VERSION_TABLE as VERSION_TABLE
from service.db.migrate import upgrade
from service.errors import NotFound, ServiceError
from service.sweeps.liveness import abandoned_reason
from service.sweeps.liveness import process_alive as process_alive
from service.sweeps.records import (
    CANCELLED,
    COMPLETED,
    COUNT_FIELDS,
    FAILED,
    RUNNING,
    ResultRow,
    RunInfo,
    RunMode,
    RunSpec,
    StoredResult,
    run_info,
)
from service.sweeps.records import RunStatus as RunStatus
from service.sweeps.tables import MAX_RUN_ID, RESULTS, RUNS
from service.sweeps.tables import SweepResult as SweepResult
from service.sweeps.tables import SweepRun as SweepRun

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "MAX_RUN_ID",
    "RESULTS",
    "RUNNING",
    "RUNS",
    "ResultRow",
    "RunInfo",
    "RunLost",
    "RunMode",
    "RunNotReady",
    "RunSpec",
    "StoredResult",
    "SweepConflict",
    "SweepStore",
    "abandoned_reason",
]

PROBLEMS_KEPT = 100


# ---------------------------------------------------------------- errors
class SweepConflict(ServiceError):
    """A sweep of this trial is already running, or the run is in the wrong state."""

    status = 409
    code = "conflict"


class RunNotReady(SweepConflict):
    """The run has no results to give (still running, failed, cancelled or purged)."""


class RunLost(ServiceError):
    """The run stopped being ours: another process declared it abandoned."""


def compress(payload: bytes) -> bytes:
    return zlib.compress(payload, 1)  # level 1: ~5x on results, fast enough per patient


def decompress(payload: bytes) -> bytes:
    return zlib.decompress(payload)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------- the store
class SweepStore:
    """Runs and results in `url` (SQLite file or PostgreSQL); migrates on open."""

    def __init__(self, database: str | Engine, *, migrate: bool = True) -> None:
        """`database`: a URL (the store builds and owns its engine) or the process's shared
        engine (service/db/engine.py; its owner disposes it)."""
        self._owns_engine = isinstance(database, str)
        self.engine: Engine = create_engine(database) if isinstance(database, str) else database
        self.url = str(self.engine.url)  # password masked
        self.sqlite = self.engine.dialect.name == "sqlite"
        if migrate:
            upgrade(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    # ------------------------------------------------------------ transactions
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite BEGIN IMMEDIATE takes the write lock up front, so
        a read-then-write never fails half way with 'database is locked'."""
        with write_transaction(self.engine) as conn:
            yield conn

    def migrate(self) -> None:
        """Alembic `upgrade head` of the whole database, serialized across processes."""
        upgrade(self.engine, again=True)

    # ------------------------------------------------------------ lifecycle of a run
    def claim(self, spec: RunSpec, *, stale_after_s: float) -> int:
        """Insert a new `running` run of `spec.trial_id`, after marking abandoned runs of the
        trial failed. SweepConflict while another run of the trial is alive."""
        now = _now()
        host = socket.gethostname()
        try:
            with self._write() as conn:
                running = conn.execute(
                    select(RUNS).where(RUNS.c.trial_id == spec.trial_id, RUNS.c.status == RUNNING)
                ).all()
                for row in running:
                    run = run_info(row)
                    reason = abandoned_reason(run, now, stale_after_s, host)
                    if reason is None:
                        raise SweepConflict(
                            f"a sweep of {spec.trial_id} is already running (run {run.id}, "
                            f"process {run.pid} on {run.host}, started "
                            f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC)"
                        )
                    conn.execute(
                        update(RUNS)
                        .where(RUNS.c.id == run.id, RUNS.c.status == RUNNING)
                        .values(status=FAILED, ended_at=now, error=reason)
                    )
                inserted = conn.execute(
                    insert(RUNS).values(
                        trial_id=spec.trial_id,
                        trial_version=spec.trial_version,
                        terminology_version=spec.terminology_version,
                        as_of=spec.as_of,
                        source_kind=spec.source_kind,
                        source=spec.source,
                        status=RUNNING,
                        requested_by=spec.requested_by,
                        started_at=now,
                        heartbeat_at=now,
                        pid=os.getpid(),
                        host=host,
                        cancel_requested=False,
                        stage="queued",
                        criteria=spec.criteria,
                        requested_mode=spec.requested_mode,
                    )
                )
                key = inserted.inserted_primary_key
                assert key is not None
                run_id = int(key[0])
        except IntegrityError as exc:  # another process inserted its run between our lines
            raise SweepConflict(f"a sweep of {spec.trial_id} is already running") from exc
        self.discard_incomplete()
        return run_id

    def discard_incomplete(self) -> int:
        """Delete the results of failed and cancelled runs (partial by definition)."""
        with self._write() as conn:
            dead = select(RUNS.c.id).where(RUNS.c.status.in_((FAILED, CANCELLED)))
            return conn.execute(delete(RESULTS).where(RESULTS.c.run_id.in_(dead))).rowcount

    def heartbeat(
        self, run_id: int, stage: str | None = None, done: int = 0, total: int = 0
    ) -> Literal["running", "cancel", "lost"]:
        """Record that the run is alive (and its progress); say whether to go on."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if stage is not None:
            values.update(stage=stage, done=done, total=total)
        with self._write() as conn:
            updated = conn.execute(
                update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status == RUNNING).values(**values)
            ).rowcount
            if updated != 1:
                return "lost"
            cancel = conn.scalar(select(RUNS.c.cancel_requested).where(RUNS.c.id == run_id))
        return "cancel" if cancel else "running"

    def add_results(self, run_id: int, rows: Sequence[ResultRow], *, stored: int) -> None:
        """Insert one batch, with the progress, in one transaction; RunLost if the run is no
        longer running (another process declared it abandoned and may have cleaned it up)."""
        with self._write() as conn:
            updated = conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status == RUNNING)
                .values(heartbeat_at=_now(), stored=stored, stage="store", done=stored)
            ).rowcount
            if updated != 1:
                raise RunLost(f"run {run_id} is no longer running")
            conn.execute(
                insert(RESULTS),
                [
                    {
                        "run_id": run_id,
                        "patient": r.patient,
                        "rank": r.rank,
                        "status": r.status,
                        "score": r.score,
                        "fails": r.fails,
                        "unknowns": r.unknowns,
                        "verdicts": r.verdicts,
                        "result": compress(r.result),
                    }
                    for r in rows
                ],
            )

    def complete(
        self,
        run_id: int,
        *,
        counts: dict[str, int],
        attrition: dict[str, Any],
        problems: Sequence[str],
        transaction_time: dt.datetime | None,
        mode: RunMode | None = None,
    ) -> None:
        """Mark the run completed, in the same transaction that checks every result is in."""
        with self._write() as conn:
            stored = conn.scalar(
                select(func.count()).select_from(RESULTS).where(RESULTS.c.run_id == run_id)
            )
            if stored != counts["patients"]:
                raise ServiceError(
                    f"run {run_id}: {stored} of {counts['patients']} results stored; not completed"
                )
            updated = conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status == RUNNING)
                .values(
                    status=COMPLETED,
                    ended_at=_now(),
                    heartbeat_at=_now(),
                    stage="done",
                    done=stored,
                    total=stored,
                    stored=stored,
                    attrition=attrition,
                    problems=list(problems[:PROBLEMS_KEPT]),
                    transaction_time=transaction_time,
                    mode=mode.mode if mode else None,
                    based_on=mode.based_on if mode else None,
                    changes=mode.changes if mode else None,
                    **{name: counts.get(name, 0) for name in COUNT_FIELDS},
                )
            ).rowcount
            if updated != 1:
                raise RunLost(f"run {run_id} is no longer running")

    def finish(self, run_id: int, status: Literal["failed", "cancelled"], error: str) -> bool:
        """End a running run without results; False if it was not running any more."""
        with self._write() as conn:
            updated = conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status == RUNNING)
                .values(status=status, ended_at=_now(), error=error[:2000])
            ).rowcount
        self.discard_incomplete()
        return updated == 1

    def request_cancel(self, run_id: int) -> RunInfo:
        with self._write() as conn:
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status == RUNNING)
                .values(cancel_requested=True)
            )
        return self.get(run_id)

    def set_write_back(self, run_id: int, outcome: str) -> None:
        with self._write() as conn:
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(write_back=outcome))

    def purge_results(self, trial_id: str, keep: int) -> list[int]:
        """Delete the results of all but the newest `keep` completed runs of the trial; their
        rows (counts, funnel) stay."""
        with self._write() as conn:
            old = [
                row.id
                for row in conn.execute(
                    select(RUNS.c.id)
                    .where(
                        RUNS.c.trial_id == trial_id,
                        RUNS.c.status == COMPLETED,
                        RUNS.c.results_purged.is_(False),
                    )
                    .order_by(RUNS.c.id.desc())
                    .offset(keep)
                )
            ]
            if old:
                conn.execute(delete(RESULTS).where(RESULTS.c.run_id.in_(old)))
                conn.execute(update(RUNS).where(RUNS.c.id.in_(old)).values(results_purged=True))
        return old

    # ------------------------------------------------------------ reading
    def get(self, run_id: int) -> RunInfo:
        if not 1 <= run_id <= MAX_RUN_ID:  # the column's range: no overflow in the driver
            raise NotFound(f"no sweep run {run_id}")
        with self.engine.connect() as conn:
            row = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).one_or_none()
        if row is None:
            raise NotFound(f"no sweep run {run_id}")
        return run_info(row)

    def runs(self, trial_id: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Newest first."""
        query = select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
        if trial_id is not None:
            query = query.where(RUNS.c.trial_id == trial_id)
        with self.engine.connect() as conn:
            return [run_info(row) for row in conn.execute(query)]

    def previous_completed(self, run: RunInfo) -> RunInfo | None:
        """The completed run of the same trial just before `run`."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RUNS)
                .where(
                    RUNS.c.trial_id == run.trial_id,
                    RUNS.c.status == COMPLETED,
                    RUNS.c.id < run.id,
                )
                .order_by(RUNS.c.id.desc())
                .limit(1)
            ).one_or_none()
        return None if row is None else run_info(row)

    def with_results(self, run_id: int) -> RunInfo:
        """The run, if its results can be read; RunNotReady otherwise."""
        run = self.get(run_id)
        if run.status != COMPLETED:
            raise RunNotReady(
                f"run {run_id} is {run.status}; results are served once a run has completed"
            )
        if run.results_purged:
            raise RunNotReady(
                f"the results of run {run_id} were removed (only the newest runs keep them)"
            )
        return run

    def count_results(self, run_id: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count()).select_from(RESULTS).where(RESULTS.c.run_id == run_id)
                )
                or 0
            )

    def results(
        self,
        run_id: int,
        *,
        limit: int | None = None,
        candidates_only: bool = False,
        status: str | None = None,
    ) -> Iterator[bytes]:
        """The full results (JSON bytes with "rank") in rank order, streamed; `status`: only
        the patients of that status (their ranks stay those of the whole run)."""
        query = select(RESULTS.c.result).where(RESULTS.c.run_id == run_id).order_by(RESULTS.c.rank)
        if candidates_only:
            query = query.where(RESULTS.c.status != "ineligible")
        if status is not None:
            query = query.where(RESULTS.c.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=200).execute(query):
                yield decompress(row.result)

    def latest_result(self, trial_id: str, patient: str) -> StoredResult | None:
        """The patient's result in the trial's newest completed run that still keeps its
        results and screened them (a decision's basis, service/worklist/), or None."""
        query = (
            select(
                RESULTS.c.patient,
                RESULTS.c.rank,
                RESULTS.c.status,
                RESULTS.c.score,
                RESULTS.c.verdicts,
            )
            .join(RUNS, RUNS.c.id == RESULTS.c.run_id)
            .where(
                RUNS.c.trial_id == trial_id,
                RUNS.c.status == COMPLETED,
                RUNS.c.results_purged.is_(False),
                RESULTS.c.patient == patient,
            )
            .order_by(RUNS.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return StoredResult(row.patient, row.rank, row.status, row.score, row.verdicts)

    def summaries(
        self,
        run_id: int,
        *,
        order: Literal["rank", "patient"] = "rank",
        limit: int | None = None,
        candidates_only: bool = False,
    ) -> Iterator[StoredResult]:
        """Rank, status, score and verdicts of each patient, streamed (no evidence)."""
        query = select(
            RESULTS.c.patient, RESULTS.c.rank, RESULTS.c.status, RESULTS.c.score, RESULTS.c.verdicts
        ).where(RESULTS.c.run_id == run_id)
        if order == "rank":
            query = query.order_by(RESULTS.c.rank)
        elif self.sqlite:  # BINARY collation: byte order, which for UTF-8 is Python's order
            query = query.order_by(RESULTS.c.patient)
        else:  # PostgreSQL's default collation may be a locale's; diffs merge in byte order
            query = query.order_by(RESULTS.c.patient.collate("C"))
        if candidates_only:
            query = query.where(RESULTS.c.status != "ineligible")
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                yield StoredResult(row.patient, row.rank, row.status, row.score, row.verdicts)

    def completed_between(
        self, trial_id: str, since: dt.datetime, before: dt.datetime
    ) -> list[RunInfo]:
        """The trial's completed runs that ended at or after `since` and before `before`
        (aware), oldest first (the recruitment report's engine counts, service/worklist/)."""
        query = (
            select(RUNS)
            .where(
                RUNS.c.trial_id == trial_id,
                RUNS.c.status == COMPLETED,
                RUNS.c.ended_at >= since.astimezone(dt.UTC),
                RUNS.c.ended_at < before.astimezone(dt.UTC),
            )
            .order_by(RUNS.c.id)
        )
        with self.engine.connect() as conn:
            return [run_info(row) for row in conn.execute(query)]
