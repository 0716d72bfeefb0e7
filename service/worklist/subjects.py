"""The `research_subjects` table: what cohort-match knows of each patient's ResearchSubject for
a trial, and how the write-back of the patient's latest decision went.

One row per (trial, patient), updated in place (unlike the decisions, it is state, not a log):

    status      the ResearchSubject.status cohort-match last wrote, or last read back and
                accepted (service/worklist/research_subject.read_back compares the EHR's
                status with it: a status that differs was changed in the EHR)
    source      who set it: `sweep` (the engine's candidate/ineligible), `decision` (a
                coordinator's decision written back) or `ehr` (read back)
    decision_id, outcome, detail
                the write-back of a decision: `written`, `failed` (with why; the next sweep's
                write-back tries again) or `off` (write-back switched off when it was made)

Revision 0005 of the one Alembic history. Rows hold references and statuses, never clinical
values; `detail` is the FHIR server's answer to a failed write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base, writing
from service.db.migrate import upgrade

__all__ = ["Outcome", "ResearchSubjectRow", "Source", "SubjectState", "SubjectStore"]

Outcome = Literal["written", "failed", "off"]
Source = Literal["sweep", "decision", "ehr"]
DETAIL_MAX = 1000
CHUNK = 500  # patients per IN list: a sweep writes every candidate (SQLite binds <= 32,766)


class ResearchSubjectRow(Base):
    __tablename__ = "research_subjects"

    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(8), nullable=True)
    status_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(8), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class SubjectState:
    """One row, as the API and the pages show it."""

    trial_id: str
    patient: str
    status: str | None
    source: Source | None
    status_at: dt.datetime | None
    decision_id: int | None
    outcome: Outcome | None
    detail: str | None
    outcome_at: dt.datetime | None


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; what went in was UTC.
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _state(row: ResearchSubjectRow) -> SubjectState:
    return SubjectState(
        trial_id=row.trial_id,
        patient=row.patient,
        status=row.status,
        source=cast(Source | None, row.source),
        status_at=_utc(row.status_at),
        decision_id=row.decision_id,
        outcome=cast(Outcome | None, row.outcome),
        detail=row.detail,
        outcome_at=_utc(row.outcome_at),
    )


class SubjectStore:
    def __init__(self, engine: Engine) -> None:
        """On the process's shared engine (service/db/engine.py); migrates on open."""
        self.engine = engine
        self._writes = writing(engine)
        upgrade(engine)

    def _update(self, trial_id: str, changes: Mapping[str, Mapping[str, object]]) -> None:
        """Set `changes[patient]`'s columns on each patient's row, adding rows that are not
        there, in one transaction. Two writers adding the same row at once (PostgreSQL; SQLite
        writers queue) make one of them fail on the primary key: it tries once more."""
        if not changes:
            return
        patients = list(changes)
        for attempt in (1, 2):
            try:
                with Session(self._writes) as session, session.begin():
                    rows: dict[str, ResearchSubjectRow] = {}
                    for start in range(0, len(patients), CHUNK):
                        query = select(ResearchSubjectRow).where(
                            ResearchSubjectRow.trial_id == trial_id,
                            ResearchSubjectRow.patient.in_(patients[start : start + CHUNK]),
                        )
                        rows |= {row.patient: row for row in session.scalars(query)}
                    for patient, values in changes.items():
                        row = rows.get(patient)
                        if row is None:
                            row = ResearchSubjectRow(trial_id=trial_id, patient=patient)
                            session.add(row)
                        for column, value in values.items():
                            setattr(row, column, value)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def known(self, trial_id: str) -> dict[str, str]:
        """Patient -> the ResearchSubject.status cohort-match last wrote or read back."""
        query = select(ResearchSubjectRow.patient, ResearchSubjectRow.status).where(
            ResearchSubjectRow.trial_id == trial_id, ResearchSubjectRow.status.is_not(None)
        )
        with Session(self.engine) as session:
            return {patient: status for patient, status in session.execute(query) if status}

    def get(self, trial_id: str, patient: str) -> SubjectState | None:
        with Session(self.engine) as session:
            row = session.get(ResearchSubjectRow, (trial_id, patient))
            return None if row is None else _state(row)

    def statuses(
        self,
        trial_id: str,
        statuses: Mapping[str, str],
        source: Mapping[str, Source],
        at: dt.datetime,
        decisions: Mapping[str, int] | None = None,
    ) -> None:
        """Each patient's ResearchSubject now has `statuses[patient]`, set by
        `source[patient]` at `at`. `decisions`: patients whose latest decision (its id) that
        status is the write-back of, now `written`."""
        when = at.astimezone(dt.UTC)
        changes: dict[str, dict[str, object]] = {}
        for patient, status in statuses.items():
            changes[patient] = {"status": status, "source": source[patient], "status_at": when}
            if decisions and patient in decisions:
                changes[patient] |= {
                    "decision_id": decisions[patient],
                    "outcome": "written",
                    "detail": None,
                    "outcome_at": when,
                }
        self._update(trial_id, changes)

    def outcome(
        self,
        trial_id: str,
        patient: str,
        decision_id: int,
        outcome: Outcome,
        at: dt.datetime,
        *,
        status: str | None = None,
        detail: str | None = None,
    ) -> None:
        """How the write-back of decision `decision_id` went; with `status` when it was
        written (the ResearchSubject has that status now)."""
        when = at.astimezone(dt.UTC)
        values: dict[str, object] = {
            "decision_id": decision_id,
            "outcome": outcome,
            "detail": detail[:DETAIL_MAX] if detail else None,
            "outcome_at": when,
        }
        if status is not None:
            values |= {"status": status, "source": "decision", "status_at": when}
        self._update(trial_id, {patient: values})

    def failed_again(self, trial_id: str, patients: Mapping[str, int], detail: str) -> None:
        """A sweep's write-back retried these patients' decisions (patient -> decision id) and
        failed: they stay `failed`, with the newer reason."""
        why = detail[:DETAIL_MAX]
        self._update(
            trial_id,
            {
                patient: {"decision_id": decision, "outcome": "failed", "detail": why}
                for patient, decision in patients.items()
            },
        )
