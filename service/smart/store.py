"""Server-side SMART state: pending launches, page sessions and one-time tickets.

Three tables on the service's database (SQLite or PostgreSQL, `COHORT_MATCH_DATABASE_URL`;
schema: service/db/migrations):

- `smart_launches`: what /launch generated (PKCE verifier, token endpoint, where to go after),
  keyed by the OAuth `state`. Taken exactly once by /callback, so a replayed or forged
  `state` finds nothing. Nothing of the flow lives in the browser, which is what lets it run
  inside an EHR iframe where cookies may be blocked.
- `smart_sessions`: the EHR's tokens and launch context, keyed by a random session id that
  the browser holds in an HttpOnly cookie. Access and refresh tokens never reach the browser.
- `smart_tickets`: a one-time, short-lived ticket the callback puts in the URL of its
  redirect, so the first page renders even where the browser refused the cookie (an EHR
  iframe on another site); see service/api/smart.py.

Times are epoch seconds (floats): SQLite has no time zones and comparisons stay exact.
The tables hold bearer tokens: protect the database like the audit trail it sits next to.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Boolean, Float, String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base, writing
from service.db.migrate import upgrade

__all__ = ["PendingLaunch", "SessionStore", "SmartSession"]


class _Launch(Base):
    __tablename__ = "smart_launches"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    iss: Mapped[str] = mapped_column(String(1024))
    launch: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    target: Mapped[str] = mapped_column(String(1024))
    redirect_uri: Mapped[str] = mapped_column(String(1024))
    token_endpoint: Mapped[str] = mapped_column(String(1024))
    issuer: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    jwks_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    verifier: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class _Session(Base):
    __tablename__ = "smart_sessions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    iss: Mapped[str] = mapped_column(String(1024))
    token_endpoint: Mapped[str] = mapped_column(String(1024))
    scope: Mapped[str] = mapped_column(Text)
    patient: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user: Mapped[str] = mapped_column(String(1024))
    need_patient_banner: Mapped[bool] = mapped_column(Boolean, default=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    access_expires_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class _Ticket(Base):
    __tablename__ = "smart_tickets"

    ticket: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True)
class PendingLaunch:
    """Everything /callback needs, written by /launch before the browser leaves for the EHR."""

    state: str
    iss: str
    launch: str | None
    target: str  # a local path under /app/
    redirect_uri: str
    token_endpoint: str
    issuer: str | None  # the OpenID issuer from discovery, for id_token checks
    jwks_uri: str | None
    verifier: str  # PKCE code_verifier; only its S256 challenge left this server
    scope: str


@dataclass(frozen=True)
class SmartSession:
    id: str
    iss: str  # the FHIR base URL the tokens are good for
    token_endpoint: str
    scope: str  # as granted
    patient: str | None  # launch context: a Patient id
    user: str  # fhirUser (or `sub`) for the audit trail and the page header
    need_patient_banner: bool
    access_token: str
    refresh_token: str | None
    access_expires_at: float
    expires_at: float

    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())


def _launch_of(row: _Launch) -> PendingLaunch:
    return PendingLaunch(
        row.state,
        row.iss,
        row.launch,
        row.target,
        row.redirect_uri,
        row.token_endpoint,
        row.issuer,
        row.jwks_uri,
        row.verifier,
        row.scope,
    )


def _session_of(row: _Session) -> SmartSession:
    return SmartSession(
        row.id,
        row.iss,
        row.token_endpoint,
        row.scope,
        row.patient,
        row.user,
        row.need_patient_banner,
        row.access_token,
        row.refresh_token,
        row.access_expires_at,
        row.expires_at,
    )


class SessionStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._writes = writing(engine)
        upgrade(engine)

    # ------------------------------------------------------------------ launches
    def save_launch(self, launch: PendingLaunch, ttl_s: float) -> None:
        with Session(self._writes) as db, db.begin():
            db.add(
                _Launch(
                    state=launch.state,
                    iss=launch.iss,
                    launch=launch.launch,
                    target=launch.target,
                    redirect_uri=launch.redirect_uri,
                    token_endpoint=launch.token_endpoint,
                    issuer=launch.issuer,
                    jwks_uri=launch.jwks_uri,
                    verifier=launch.verifier,
                    scope=launch.scope,
                    expires_at=self.clock() + ttl_s,
                )
            )

    def take_launch(self, state: str) -> PendingLaunch | None:
        """The launch for `state`, at most once: the row is deleted in the same transaction,
        and only the transaction whose DELETE removed it gets it (two racing callbacks with
        the same state cannot both win)."""
        with Session(self._writes) as db, db.begin():
            row = db.get(_Launch, state)
            if row is None:
                return None
            found = _launch_of(row)
            alive = row.expires_at > self.clock()
            db.expunge(row)
            gone = db.execute(delete(_Launch).where(_Launch.state == state))
            won = getattr(gone, "rowcount", 0) == 1
        return found if won and alive else None

    # ------------------------------------------------------------------ sessions
    def create_session(
        self,
        *,
        iss: str,
        token_endpoint: str,
        scope: str,
        patient: str | None,
        user: str,
        need_patient_banner: bool,
        access_token: str,
        refresh_token: str | None,
        access_expires_at: float,
        ttl_s: float,
    ) -> SmartSession:
        self.purge()
        row = _Session(
            id=secrets.token_urlsafe(32),
            iss=iss,
            token_endpoint=token_endpoint,
            scope=scope,
            patient=patient,
            user=user,
            need_patient_banner=need_patient_banner,
            access_token=access_token,
            refresh_token=refresh_token,
            access_expires_at=access_expires_at,
            expires_at=self.clock() + ttl_s,
        )
        session = _session_of(row)
        with Session(self._writes) as db, db.begin():
            db.add(row)
        return session

    def get(self, session_id: str) -> SmartSession | None:
        with Session(self.engine) as db:
            row = db.get(_Session, session_id)
            if row is None or row.expires_at <= self.clock():
                return None
            return _session_of(row)

    def update_tokens(
        self,
        session_id: str,
        *,
        access_token: str,
        refresh_token: str | None,
        access_expires_at: float,
        scope: str,
    ) -> None:
        with Session(self._writes) as db, db.begin():
            db.execute(
                update(_Session)
                .where(_Session.id == session_id)
                .values(
                    access_token=access_token,
                    refresh_token=refresh_token,
                    access_expires_at=access_expires_at,
                    scope=scope,
                )
            )

    def delete(self, session_id: str) -> None:
        with Session(self._writes) as db, db.begin():
            db.execute(delete(_Ticket).where(_Ticket.session_id == session_id))
            db.execute(delete(_Session).where(_Session.id == session_id))

    # ------------------------------------------------------------------ tickets
    def issue_ticket(self, session_id: str, ttl_s: float) -> str:
        ticket = secrets.token_urlsafe(32)
        with Session(self._writes) as db, db.begin():
            db.add(_Ticket(ticket=ticket, session_id=session_id, expires_at=self.clock() + ttl_s))
        return ticket

    def redeem_ticket(self, ticket: str) -> str | None:
        """The session id a ticket stands for, once; like `take_launch`, delete decides."""
        with Session(self._writes) as db, db.begin():
            row = db.get(_Ticket, ticket)
            if row is None:
                return None
            session_id, alive = row.session_id, row.expires_at > self.clock()
            gone = db.execute(delete(_Ticket).where(_Ticket.ticket == ticket))
            won = getattr(gone, "rowcount", 0) == 1
        return session_id if won and alive else None

    def purge(self) -> None:
        """Drop whatever has expired (called whenever a session is created)."""
        now = self.clock()
        with Session(self._writes) as db, db.begin():
            for table in (_Launch, _Ticket, _Session):
                db.execute(delete(table).where(table.expires_at <= now))

    def count_sessions(self) -> int:
        with Session(self.engine) as db:
            return len(db.scalars(select(_Session.id)).all())
