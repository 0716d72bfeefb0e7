"""The `decisions` table and its store: every decision a coordinator records, kept.

Append-only: a decision is never updated or deleted, a newer one supersedes it (the current
decision is the latest, service/worklist/model.py), so a patient's history for a trial is the
pre-screening log a site keeps. The table lives in the service's database, on the engine
every store shares; its schema is the one Alembic history's (revision 0004). Rows hold
references, the coordinator's note and, as `basis`, the status and verdicts the decision was
made on; never clinical values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import cast

from sqlalchemy import Date, DateTime, Index, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base, writing
from service.db.migrate import upgrade
from service.worklist.model import Decision, DecisionState, Screened

__all__ = ["DecisionRow", "DecisionStore"]

NOTE_MAX = 2000


class DecisionRow(Base):
    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_trial_id_patient", "trial_id", "patient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    patient: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    criterion: Mapped[str | None] = mapped_column(String(64), nullable=True)
    until: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    subject: Mapped[str] = mapped_column(String(256))
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    basis_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    basis_verdicts: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON {id: verdict}


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; what went in was UTC.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _decision(row: DecisionRow) -> Decision:
    basis = None
    if row.basis_status is not None:
        basis = Screened(row.basis_status, json.loads(row.basis_verdicts or "{}"))
    return Decision(
        trial_id=row.trial_id,
        patient=row.patient,
        state=cast(DecisionState, row.state),
        subject=row.subject,
        at=_utc(row.at),
        note=row.note,
        criterion=row.criterion,
        until=row.until,
        client_id=row.client_id,
        basis=basis,
        id=row.id,
    )


class DecisionStore:
    def __init__(self, engine: Engine) -> None:
        """On the process's shared engine (service/db/engine.py); migrates on open."""
        self.engine = engine
        self._writes = writing(engine)
        upgrade(engine)

    def record(self, decision: Decision) -> Decision:
        """Append `decision`; returns it with its row id."""
        if decision.at.tzinfo is None:
            raise ValueError("a decision's time must be aware")
        row = DecisionRow(
            trial_id=decision.trial_id,
            patient=decision.patient,
            state=decision.state,
            criterion=decision.criterion,
            until=decision.until,
            note=decision.note[:NOTE_MAX] if decision.note is not None else None,
            subject=decision.subject,
            client_id=decision.client_id,
            at=decision.at.astimezone(dt.UTC),
            basis_status=decision.basis.status if decision.basis else None,
            basis_verdicts=json.dumps(dict(decision.basis.verdicts)) if decision.basis else None,
        )
        with Session(self._writes, expire_on_commit=False) as session, session.begin():
            session.add(row)
        return _decision(row)

    def history(self, trial_id: str, patient: str) -> list[Decision]:
        """The patient's decisions for the trial, oldest first (the current one last)."""
        query = (
            select(DecisionRow)
            .where(DecisionRow.trial_id == trial_id, DecisionRow.patient == patient)
            .order_by(DecisionRow.at, DecisionRow.id)
        )
        with Session(self.engine) as session:
            return [_decision(row) for row in session.scalars(query)]

    def by_patient(self, trial_id: str) -> dict[str, list[Decision]]:
        """Every patient's history for the trial (for a sweep's worklist and diff)."""
        query = (
            select(DecisionRow)
            .where(DecisionRow.trial_id == trial_id)
            .order_by(DecisionRow.at, DecisionRow.id)
        )
        histories: dict[str, list[Decision]] = defaultdict(list)
        with Session(self.engine) as session:
            for row in session.scalars(query):
                histories[row.patient].append(_decision(row))
        return dict(histories)
