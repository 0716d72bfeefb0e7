"""The server-side SMART store: launches and tickets are taken once; everything expires."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from service.smart.store import PendingLaunch, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SessionStore:
    return SessionStore(create_engine(f"sqlite:///{tmp_path / 'smart.db'}"), clock=clock)


def _launch(state: str = "s1") -> PendingLaunch:
    return PendingLaunch(
        state,
        "https://ehr.test/fhir",
        "L",
        "/app/patient",
        "https://app/callback",
        "https://ehr.test/token",
        None,
        None,
        "v" * 64,
        "launch openid",
    )


def _session(store: SessionStore, **overrides: object) -> str:
    values: dict[str, object] = {
        "iss": "https://ehr.test/fhir",
        "token_endpoint": "https://ehr.test/token",
        "scope": "patient/*.rs",
        "patient": "p1",
        "user": "Practitioner/1",
        "need_patient_banner": True,
        "access_token": "at",
        "refresh_token": "rt",
        "access_expires_at": store.clock() + 300,
        "ttl_s": 3600,
    }
    values.update(overrides)
    return store.create_session(**values).id  # type: ignore[arg-type]


def test_a_launch_is_taken_once(store: SessionStore) -> None:
    store.save_launch(_launch(), ttl_s=600)
    assert store.take_launch("s1") == _launch()
    assert store.take_launch("s1") is None
    assert store.take_launch("never-issued") is None


def test_an_expired_launch_is_gone(store: SessionStore, clock: Clock) -> None:
    store.save_launch(_launch(), ttl_s=600)
    clock.now += 601
    assert store.take_launch("s1") is None


def test_a_ticket_is_redeemed_once_and_expires(store: SessionStore, clock: Clock) -> None:
    sid = _session(store)
    ticket = store.issue_ticket(sid, ttl_s=120)
    assert store.redeem_ticket(ticket) == sid
    assert store.redeem_ticket(ticket) is None
    late = store.issue_ticket(sid, ttl_s=120)
    clock.now += 121
    assert store.redeem_ticket(late) is None


def test_sessions_expire_and_are_purged(store: SessionStore, clock: Clock) -> None:
    sid = _session(store, ttl_s=60)
    assert store.get(sid) is not None
    assert len(sid) >= 43  # 256 random bits
    clock.now += 61
    assert store.get(sid) is None
    _session(store)  # creating a session purges what expired
    assert store.count_sessions() == 1


def test_tokens_are_updated_and_sessions_deleted(store: SessionStore) -> None:
    sid = _session(store)
    store.update_tokens(
        sid,
        access_token="at2",  # noqa: S106 - a test value
        refresh_token=None,
        access_expires_at=5.0,
        scope="x",
    )
    session = store.get(sid)
    assert session is not None
    assert (session.access_token, session.refresh_token, session.scope) == ("at2", None, "x")
    store.delete(sid)
    assert store.get(sid) is None
