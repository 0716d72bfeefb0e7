"""Cards issued and the feedback CDS clients send about them (SQLAlchemy).

The tables live in the service's database (`COHORT_MATCH_DATABASE_URL`), on the engine every
store shares; their schema is the one Alembic history's (service/db/migrations). A card row
holds references only (hook instance, patient, trial, status): feedback arrives with nothing
but the card's uuid, and is joined to its patient and trial through it. Feedback rows keep the
clinician's override reason and comment, which is what feedback is for; comments are free
text limited to 2,000 characters.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Date, DateTime, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.cds.models import CdsFeedbackItem
from service.db import Base, writing
from service.db.migrate import upgrade

__all__ = ["CdsCard", "CdsFeedback", "CdsStore", "IssuedCard"]


class CdsCard(Base):
    __tablename__ = "cds_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    service_id: Mapped[str] = mapped_column(String(128))
    hook_instance: Mapped[str] = mapped_column(String(256))
    trial_id: Mapped[str] = mapped_column(String(64), index=True)
    patient: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    as_of: Mapped[dt.date] = mapped_column(Date)


class CdsFeedback(Base):
    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    service_id: Mapped[str] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(256), nullable=True)  # JWT iss
    card_uuid: Mapped[str] = mapped_column(String(128), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    accepted_suggestions: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of ids
    reason_system: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason_code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason_display: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user_comment: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True)
class IssuedCard:
    """What is recorded about a card when it is returned."""

    uuid: str
    service_id: str
    hook_instance: str
    trial_id: str
    patient: str
    status: str
    as_of: dt.date


def _utc(moment: dt.datetime) -> dt.datetime:
    # outcomeTimestamp is "ISO timestamp in UTC"; one without an offset is taken as UTC.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


class CdsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writes = writing(engine)
        upgrade(engine)

    def card_issued(self, card: IssuedCard) -> None:
        with Session(self._writes) as session, session.begin():
            session.add(
                CdsCard(
                    uuid=card.uuid,
                    issued_at=dt.datetime.now(dt.UTC),
                    service_id=card.service_id,
                    hook_instance=card.hook_instance,
                    trial_id=card.trial_id,
                    patient=card.patient,
                    status=card.status,
                    as_of=card.as_of,
                )
            )

    def add_feedback(
        self, service_id: str, client: str | None, items: list[CdsFeedbackItem]
    ) -> None:
        """Store every item (all or none)."""
        now = dt.datetime.now(dt.UTC)
        with Session(self._writes) as session, session.begin():
            for item in items:
                reason = item.overrideReason.reason if item.overrideReason else None
                session.add(
                    CdsFeedback(
                        received_at=now,
                        service_id=service_id,
                        client=client,
                        card_uuid=item.card,
                        outcome=item.outcome,
                        outcome_at=_utc(item.outcomeTimestamp),
                        accepted_suggestions=json.dumps(
                            [s.id for s in item.acceptedSuggestions or ()]
                        ),
                        reason_system=reason.system if reason else None,
                        reason_code=reason.code if reason else None,
                        reason_display=reason.display if reason else None,
                        user_comment=(
                            item.overrideReason.userComment if item.overrideReason else None
                        ),
                    )
                )

    def patients_of(self, card_uuids: list[str]) -> list[str]:
        """The patients of the cards that are known (for the feedback call's audit row)."""
        with Session(self.engine) as session:
            query = select(CdsCard.patient).where(CdsCard.uuid.in_(set(card_uuids)))
            return sorted(set(session.scalars(query)))

    def feedback(self, card_uuid: str | None = None) -> list[CdsFeedback]:
        with Session(self.engine) as session:
            query = select(CdsFeedback).order_by(CdsFeedback.id)
            if card_uuid is not None:
                query = query.where(CdsFeedback.card_uuid == card_uuid)
            return list(session.scalars(query))

    def cards(self) -> list[CdsCard]:
        with Session(self.engine) as session:
            return list(session.scalars(select(CdsCard).order_by(CdsCard.id)))
