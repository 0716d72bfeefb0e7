"""API authentication, scopes, the loopback rule, and the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, text

from service.config import Settings

MATCH = "/trials/NCT06946485/match"
BODY = {"patient": "p01", "as_of": "2026-11-20"}


@pytest.mark.parametrize(
    ("claims", "scope"),
    [
        ({"exp": 1_000_000_000}, "cohort-match/*.read"),
        ({"aud": "someone-else"}, "cohort-match/*.read"),
        ({"iss": "https://evil.test"}, "cohort-match/*.read"),
        ({"sub": None}, "cohort-match/*.read"),
        ({"scope": 42}, "ignored"),
        ({"scope": {"cohort-match/*.read": True}}, "ignored"),
        ({"scope": ["cohort-match/*.read", 7]}, "ignored"),
        ({"sub": "x" * 257}, "cohort-match/*.read"),
        ({"sub": "coordinator\x00-7"}, "cohort-match/*.read"),
        ({"client_id": "ehr\n"}, "cohort-match/*.read"),
        ({"client_id": "c" * 300}, "cohort-match/*.read"),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "no-subject",
        "scope-number",
        "scope-object",
        "scope-list-with-number",
        "subject-too-long",
        "subject-with-nul",
        "client-with-newline",
        "client-too-long",
    ],
)
def test_invalid_tokens_are_401(
    api: TestClient, make_token: Callable[..., str], claims: dict, scope: str
) -> None:  # type: ignore[type-arg]
    token = make_token(**{"scope": scope, **claims})
    response = api.post(MATCH, json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["issue"][0]["code"] == "login"


def test_no_token_is_401(api: TestClient) -> None:
    assert api.post(MATCH, json=BODY).status_code == 401
    assert api.get("/trials").status_code == 401


def test_a_token_signed_by_another_key_is_401(api: TestClient) -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    other = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
    forged = jwt.encode(
        {"alg": "RS256", "kid": "idp-1"},
        {
            "iss": "https://idp.hospital.test",
            "aud": "cohort-match",
            "sub": "x",
            "exp": 9_999_999_999,
            "scope": "cohort-match/*.read",
        },
        other,
    )
    assert (
        api.post(MATCH, json=BODY, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )


def test_a_scope_list_of_strings_is_accepted(
    api: TestClient, make_token: Callable[..., str]
) -> None:
    token = make_token(scope=["cohort-match/match.read"])
    response = api.post(MATCH, json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_scopes_are_enforced(api: TestClient, make_token: Callable[..., str]) -> None:
    only_match = {"Authorization": f"Bearer {make_token('cohort-match/match.read')}"}
    assert api.post(MATCH, json=BODY, headers=only_match).status_code == 200
    refused = api.post(
        "/trials/NCT06946485/candidates", json={"patients": ["p01"]}, headers=only_match
    )
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


def test_every_access_is_audited_without_clinical_values(
    api: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    first = api.post(MATCH, json=BODY, headers={**auth, "X-Request-ID": "req-42"})
    # the service's own id is the key; a client's value is never trusted as one
    assert first.headers["x-request-id"] != "req-42"
    api.post(MATCH, json={"patient": "nobody"}, headers=auth)
    engine = create_engine(settings.database_url)
    with engine.connect() as db:
        rows = db.execute(
            text(
                "select request_id, subject, client_id, action, trial_id, patients, outcome "
                "from audit_events order by id"
            )
        ).all()
    assert rows[0] == (
        first.headers["x-request-id"],
        "coordinator-7",
        "ehr",
        "match",
        "NCT06946485",
        '["Patient/p01"]',
        "likely_eligible",
    )
    assert rows[1][5] == '["Patient/nobody"]'
    assert rows[1][6] == "error 404"
    dump = json.dumps([list(r) for r in rows])
    assert "118" not in dump
    assert "g/L" not in dump


def test_auth_disabled_is_refused_off_loopback() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        Settings(auth_disabled=True, host="0.0.0.0")  # noqa: S104 - the address being refused
    assert Settings(auth_disabled=True, host="127.0.0.1").auth_disabled
    assert Settings(auth_disabled=True, host="::1").auth_disabled


def test_auth_disabled_on_loopback_serves_without_token(settings: Settings, fake_fhir) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import app_for

    open_settings = settings.model_copy(update={"auth_disabled": True, "auth_jwks_file": None})
    with TestClient(app_for(open_settings)) as client:
        assert client.post(MATCH, json=BODY).status_code == 200


def _audit_rows(settings: Settings) -> list[tuple]:  # type: ignore[type-arg]
    engine = create_engine(settings.database_url)
    with engine.connect() as db:
        rows = db.execute(
            text("select action, trial_id, patients, outcome from audit_events order by id")
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_a_refused_scope_is_audited_on_match_and_candidates(
    api: TestClient, make_token: Callable[..., str], settings: Settings
) -> None:
    only_sweeps = {"Authorization": f"Bearer {make_token('cohort-match/sweeps.read')}"}
    assert api.post(MATCH, json=BODY, headers=only_sweeps).status_code == 403
    listed = api.post(
        "/trials/NCT06946485/candidates", json={"patients": ["p01"]}, headers=only_sweeps
    )
    assert listed.status_code == 403
    rows = _audit_rows(settings)
    assert ("match", "NCT06946485", "[]", "error 403") in rows
    assert ("candidates", "NCT06946485", "[]", "error 403") in rows


def test_an_access_that_cannot_be_audited_returns_no_patient_data(
    api: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import service.audit

    class DownSession:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OperationalError("insert into audit_events", {}, Exception("database down"))

    monkeypatch.setattr(service.audit, "Session", DownSession)
    response = api.post(MATCH, json=BODY, headers=auth)
    assert response.status_code == 503, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "could not be audited" in response.json()["issue"][0]["diagnostics"]
    assert "criteria" not in response.text


def test_audit_values_are_fitted_to_their_columns(settings: Settings) -> None:
    from service.audit import AuditRecord, AuditStore

    store = AuditStore(settings.database_url)
    store.record(
        AuditRecord("r" * 100, "sub\x00ject", None, "a" * 100, "T" * 200, ["Patient/\ud800"], "ok")
    )
    (row,) = store.recent(1)
    store.close()
    assert row.request_id == "r" * 64
    assert row.subject == "subject"
    assert row.action == "a" * 64
    assert row.trial_id == "T" * 64
    assert row.patients == '["Patient/?"]'
