"""The sweep tables (SQLAlchemy models on the one declarative base, service/db/base.py).

    sweep_runs      one row per run: trial and version, terminology version, as_of, source,
                    status, who and where (requested_by, pid, host, heartbeat), progress,
                    counts, the attrition funnel
    sweep_results   one row per patient of a run: rank, status, score, the verdict of every
                    criterion, and the full result (JSON with evidence, zlib-compressed: a
                    result is ~20 KB of JSON and compresses ~5x)

Their schema is made by the migrations (service/db/migrations 0001, 0002); a test checks that
the migrations and these models agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

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
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base

__all__ = ["MAX_RUN_ID", "RESULTS", "RUNS", "SweepResult", "SweepRun"]

# Run ids are INTEGER columns (32-bit on PostgreSQL).
MAX_RUN_ID = 2**31 - 1


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
