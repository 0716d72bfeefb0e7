"""Persisted sweep runs: SQLAlchemy models, migrations, and every query sweeps make.

    sweep_runs      one row per run: trial and version, terminology version, as_of, source,
                    status, who and where (requested_by, pid, host, heartbeat), progress,
                    counts, the attrition funnel
    sweep_results   one row per patient of a run: rank, status, score, the verdict of every
                    criterion, and the full result (JSON with evidence, zlib-compressed: a
                    result is ~20 KB of JSON and compresses ~5x)

The schema is Alembic's (service/sweeps/migrations, version table `sweeps_alembic_version` so
it never meets another component's). `SweepStore` applies `upgrade head` when it opens the
database, under a lock (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE) so that two
processes starting at once do not race.

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
import sqlite3
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.errors import NotFound, ServiceError

# Run ids are INTEGER columns (32-bit on PostgreSQL).
MAX_RUN_ID = 2**31 - 1

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "RUNNING",
    "ResultRow",
    "RunInfo",
    "RunLost",
    "RunMode",
    "RunNotReady",
    "RunSpec",
    "StoredResult",
    "SweepConflict",
    "SweepStore",
]

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
RunStatus = Literal["running", "completed", "failed", "cancelled"]
VERSION_TABLE = "sweeps_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PROBLEMS_KEPT = 100
# pg_advisory_xact_lock key for migrations: any constant unique to this component ("swee").
MIGRATION_LOCK = 0x73776565


# ---------------------------------------------------------------- errors
class SweepConflict(ServiceError):
    """A sweep of this trial is already running, or the run is in the wrong state."""

    status = 409
    code = "conflict"


class RunNotReady(SweepConflict):
    """The run has no results to give (still running, failed, cancelled or purged)."""


class RunLost(ServiceError):
    """The run stopped being ours: another process declared it abandoned."""


# ---------------------------------------------------------------- models
class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class SweepRun(Base):
    __tablename__ = "sweep_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    trial_version: Mapped[str] = mapped_column(String(64))
    terminology_version: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[dt.date] = mapped_column(Date)
    source_kind: Mapped[str] = mapped_column(String(16))  # files | fhir
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    stage: Mapped[str] = mapped_column(String(16), default="queued")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    patients: Mapped[int] = mapped_column(Integer, default=0)
    likely_eligible: Mapped[int] = mapped_column(Integer, default=0)
    possibly_eligible: Mapped[int] = mapped_column(Integer, default=0)
    ineligible: Mapped[int] = mapped_column(Integer, default=0)
    resources: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    # Bulk export's transactionTime: the `_since` of the next incremental run.
    transaction_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    criteria: Mapped[Any] = mapped_column(JSON)  # [{id, kind, assessment, text}] of this version
    attrition: Mapped[Any | None] = mapped_column(JSON)  # the funnel, set with `completed`
    problems: Mapped[Any | None] = mapped_column(JSON)  # the first unreadable records, named
    error: Mapped[str | None] = mapped_column(Text)
    write_back: Mapped[str | None] = mapped_column(Text)
    results_purged: Mapped[bool] = mapped_column(Boolean, default=False)
    # Incremental runs (migration 0002): what was asked, how it ran, from which run's
    # snapshot, and what the delta held (service/sweeps/snapshot.py DeltaCounts).
    requested_mode: Mapped[str | None] = mapped_column(String(16))  # auto | full
    mode: Mapped[str | None] = mapped_column(String(16))  # files | full | incremental
    based_on: Mapped[int | None] = mapped_column(Integer)
    changes: Mapped[Any | None] = mapped_column(JSON)

    __table_args__ = (
        # The DB-level guarantee that one trial never has two running sweeps.
        Index(
            "ix_sweep_runs_one_running",
            "trial_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_sweep_runs_trial_id_id", "trial_id", "id"),
    )


class SweepResult(Base):
    __tablename__ = "sweep_results"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("sweep_runs.id", ondelete="CASCADE"), primary_key=True
    )
    patient: Mapped[str] = mapped_column(String(255), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    score: Mapped[float] = mapped_column(Float)
    fails: Mapped[int] = mapped_column(Integer)
    unknowns: Mapped[int] = mapped_column(Integer)
    verdicts: Mapped[Any] = mapped_column(JSON)  # {criterion id: verdict}
    result: Mapped[bytes] = mapped_column(LargeBinary)  # zlib(JSON with "rank")

    __table_args__ = (Index("ix_sweep_results_run_id_rank", "run_id", "rank"),)


RUNS = cast(Table, SweepRun.__table__)
RESULTS = cast(Table, SweepResult.__table__)


# ---------------------------------------------------------------- plain values
@dataclass(frozen=True)
class RunSpec:
    """What a new run is: set once, at claim."""

    trial_id: str
    trial_version: str
    terminology_version: str
    as_of: dt.date
    source_kind: Literal["files", "fhir"]
    source: str
    requested_by: str
    criteria: list[dict[str, str]]
    requested_mode: Literal["auto", "full"] = "auto"


@dataclass(frozen=True)
class RunMode:
    """How a run got its population, recorded with `completed`."""

    mode: Literal["files", "full", "incremental"]
    based_on: int | None = None  # the run whose snapshot an incremental run started from
    changes: dict[str, Any] | None = None  # what the delta held, and why a run went full


@dataclass(frozen=True)
class RunInfo:
    """A snapshot of one run's row."""

    id: int
    trial_id: str
    trial_version: str
    terminology_version: str
    as_of: dt.date
    source_kind: str
    source: str
    status: RunStatus
    requested_by: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    heartbeat_at: dt.datetime
    pid: int
    host: str
    cancel_requested: bool
    stage: str
    done: int
    total: int
    stored: int
    counts: dict[str, int]
    transaction_time: dt.datetime | None
    criteria: list[dict[str, str]]
    attrition: dict[str, Any] | None
    problems: list[str]
    error: str | None
    write_back: str | None
    results_purged: bool
    requested_mode: str | None = None
    mode: str | None = None
    based_on: int | None = None
    changes: dict[str, Any] | None = None

    @property
    def has_results(self) -> bool:
        return self.status == COMPLETED and not self.results_purged

    @property
    def criterion_ids(self) -> list[str]:
        return [c["id"] for c in self.criteria]


COUNT_FIELDS = (
    "patients",
    "likely_eligible",
    "possibly_eligible",
    "ineligible",
    "resources",
    "errors",
)


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One patient's result as stored; `result` is the JSON bytes, with its rank."""

    patient: str
    rank: int
    status: str
    score: float
    fails: int
    unknowns: int
    verdicts: dict[str, str]
    result: bytes


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A stored result without the full JSON (diffs and funnels need no evidence)."""

    patient: str
    rank: int
    status: str
    score: float
    verdicts: dict[str, str] = field(default_factory=dict)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no offset: everything is written in UTC, so a naive value read back is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _run_info(row: Any) -> RunInfo:
    started, heartbeat = _utc(row.started_at), _utc(row.heartbeat_at)
    assert started is not None and heartbeat is not None
    return RunInfo(
        id=row.id,
        trial_id=row.trial_id,
        trial_version=row.trial_version,
        terminology_version=row.terminology_version,
        as_of=row.as_of,
        source_kind=row.source_kind,
        source=row.source,
        status=row.status,
        requested_by=row.requested_by,
        started_at=started,
        ended_at=_utc(row.ended_at),
        heartbeat_at=heartbeat,
        pid=row.pid,
        host=row.host,
        cancel_requested=bool(row.cancel_requested),
        stage=row.stage,
        done=row.done,
        total=row.total,
        stored=row.stored,
        counts={name: getattr(row, name) for name in COUNT_FIELDS},
        transaction_time=_utc(row.transaction_time),
        criteria=list(row.criteria or []),
        attrition=row.attrition,
        problems=list(row.problems or []),
        error=row.error,
        write_back=row.write_back,
        results_purged=bool(row.results_purged),
        requested_mode=row.requested_mode,
        mode=row.mode,
        based_on=row.based_on,
        changes=row.changes,
    )


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process on this host (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # Linux: a killed child not yet reaped by its parent still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def abandoned_reason(
    run: RunInfo, now: dt.datetime, stale_after_s: float, host: str | None = None
) -> str | None:
    """Why a `running` run is taken for dead, or None while it may still be alive."""
    host = host or socket.gethostname()
    if run.host == host and not process_alive(run.pid):
        return f"abandoned: process {run.pid} on {run.host} is gone"
    silent = (now - run.heartbeat_at).total_seconds()
    if silent > stale_after_s:
        return (
            f"abandoned: no heartbeat from process {run.pid} on {run.host} "
            f"for {silent:.0f} s (since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
    return None


def compress(payload: bytes) -> bytes:
    return zlib.compress(payload, 1)  # level 1: ~5x on results, fast enough per patient


def decompress(payload: bytes) -> bytes:
    return zlib.decompress(payload)


# ---------------------------------------------------------------- the store
class SweepStore:
    """Runs and results in `url` (SQLite file or PostgreSQL); migrates on open."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine: Engine = create_engine(
            url,
            pool_pre_ping=True,
            json_serializer=lambda value: orjson.dumps(value).decode(),
            json_deserializer=orjson.loads,
        )
        self.sqlite = self.engine.dialect.name == "sqlite"
        if self.sqlite:
            _sqlite_transactions(self.engine)
        if migrate:
            self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ transactions
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite BEGIN IMMEDIATE takes the write lock up front, so
        a read-then-write never fails half way with 'database is locked'."""
        with self.engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    def migrate(self) -> None:
        """Alembic `upgrade head`, serialized across processes."""
        from alembic import command
        from alembic.config import Config

        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

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
                    run = _run_info(row)
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
        return _run_info(row)

    def runs(self, trial_id: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Newest first."""
        query = select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
        if trial_id is not None:
            query = query.where(RUNS.c.trial_id == trial_id)
        with self.engine.connect() as conn:
            return [_run_info(row) for row in conn.execute(query)]

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
        return None if row is None else _run_info(row)

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


def _sqlite_transactions(engine: Engine) -> None:
    """Let us emit BEGIN ourselves (SQLAlchemy's documented pysqlite recipe): pysqlite's own
    transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE. WAL lets readers (the
    API) read while a sweep writes; busy_timeout makes writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        # Switching a fresh file to WAL needs it to itself, and SQLite does not always wait
        # for that (busy_timeout notwithstanding) when several connections open at once.
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
