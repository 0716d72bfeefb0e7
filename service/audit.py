"""The audit trail: who accessed which patients, for which trial, when, and how it ended.

One row per API access, persisted with SQLAlchemy (SQLite file by default, PostgreSQL by
`COHORT_MATCH_DATABASE_URL`). Rows carry references and outcomes only, never clinical values.

One way in: an endpoint that touches patient data declares the `audited(action)` dependency
(service/api/deps.py), fills in the call's `AuditEntry` as it proceeds, and the dependency
writes it once, however the call ends, with `AuditStore.arecord` (off the event loop) before
the response leaves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base, create_engine, writing
from service.db.migrate import upgrade
from service.errors import ServiceError

__all__ = ["AuditEntry", "AuditEvent", "AuditRecord", "AuditStore", "AuditUnavailable"]

log = logging.getLogger(__name__)


class AuditUnavailable(ServiceError):
    """The audit row could not be written: the access is refused, its data not returned."""

    status = 503
    code = "transient"


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    trial_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    patients: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of references
    outcome: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class AuditRecord:
    request_id: str
    subject: str
    client_id: str | None
    action: str
    trial_id: str | None
    patients: list[str]
    outcome: str


@dataclass
class AuditEntry:
    """The audit row of one call, filled in as the call proceeds (who, which trial, which
    patients, how it ended); written once when it ends."""

    action: str
    subject: str = "unauthenticated"
    client_id: str | None = None
    trial_id: str | None = None
    patients: list[str] = field(default_factory=list)
    outcome: str = "error"
    # Writes the call makes once its audit row is in (a card issued, feedback stored): a call
    # that fails, its audit included, stores nothing.
    after: list[Callable[[], None]] = field(default_factory=list)
    # Set by the `audited` dependency (service/api/deps.py): writes the row, once.
    writer: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    def then(self, write: Callable[[], None]) -> None:
        self.after.append(write)

    async def write_now(self) -> None:
        """Write the row now, as it stands, instead of when the call ends: for a call whose
        answer reports writes that must follow its audit row (a decision, then its
        write-back). Whatever the call does next, the row is not written again."""
        if self.writer is None:
            raise RuntimeError(f"{self.action}: no audited(...) dependency writes this row")
        await self.writer()

    def record(self, request_id: str) -> AuditRecord:
        return AuditRecord(
            request_id,
            self.subject,
            self.client_id,
            self.action,
            self.trial_id,
            list(self.patients),
            self.outcome,
        )


class AuditStore:
    def __init__(self, database: str | Engine) -> None:
        """`database`: a URL (the store builds and owns its engine) or the process's shared
        engine (service/db/engine.py; its owner disposes it). Migrates on open."""
        self._owns_engine = isinstance(database, str)
        self.engine: Engine = create_engine(database) if isinstance(database, str) else database
        self._writes = writing(self.engine)
        upgrade(self.engine)

    def record(self, record: AuditRecord) -> None:
        """Write one row; raises AuditUnavailable when the database refuses it.

        Values are fitted to their columns here (NUL removed, PostgreSQL refuses it in text;
        cut to the column size), so an odd value never costs the row. Callers write the row
        before patient data leaves the service.
        """
        try:
            with Session(self._writes) as session, session.begin():
                session.add(
                    AuditEvent(
                        at=dt.datetime.now(dt.UTC),
                        request_id=_fit(record.request_id, 64),
                        subject=_fit(record.subject, 256),
                        client_id=None if record.client_id is None else _fit(record.client_id, 256),
                        action=_fit(record.action, 64),
                        trial_id=None if record.trial_id is None else _fit(record.trial_id, 64),
                        patients=json.dumps([_fit(p, 200) for p in record.patients]),
                        outcome=_fit(record.outcome, 64),
                    )
                )
        except SQLAlchemyError as exc:
            log.error(
                "audit write failed for request %s: %s", record.request_id, type(exc).__name__
            )
            raise AuditUnavailable("the access could not be audited; try again later") from exc

    async def arecord(self, record: AuditRecord) -> None:
        """`record` off the event loop (a database round trip must not stall other requests)."""
        await asyncio.to_thread(self.record, record)

    def recent(self, limit: int = 100) -> list[AuditEvent]:
        with Session(self.engine) as session:
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return list(rows)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _fit(value: str, size: int) -> str:
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:size]
