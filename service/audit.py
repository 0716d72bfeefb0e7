"""The audit trail: who accessed which patients, for which trial, when, and how it ended.

One row per API access, persisted with SQLAlchemy (SQLite file by default, PostgreSQL by
`COHORT_MATCH_DATABASE_URL`). Rows carry references and outcomes only, never clinical values.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import DateTime, Integer, String, Text, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["AuditEvent", "AuditRecord", "AuditStore"]


class Base(DeclarativeBase):
    pass


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


class AuditStore:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        Base.metadata.create_all(self.engine)

    def record(self, record: AuditRecord) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                AuditEvent(
                    at=dt.datetime.now(dt.UTC),
                    request_id=record.request_id,
                    subject=record.subject,
                    client_id=record.client_id,
                    action=record.action,
                    trial_id=record.trial_id,
                    patients=json.dumps(record.patients),
                    outcome=record.outcome,
                )
            )

    def recent(self, limit: int = 100) -> list[AuditEvent]:
        with Session(self.engine) as session:
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return list(rows)

    def close(self) -> None:
        self.engine.dispose()
