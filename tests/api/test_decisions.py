"""POST/GET /trials/{trial_id}/patients/{patient_id}/decisions: who, when, why, kept in
order; its own scopes; OperationOutcome errors; every call audited, no decision unaudited."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from service.app_state import state_of
from service.audit import AuditUnavailable
from service.clock import Clock
from service.config import Settings
from service.worklist.research_subject import subject_id
from tests.api.conftest import FHIR
from tests.conftest import app_for

NANJING = dt.timezone(dt.timedelta(hours=8))
PATH = "/trials/NCT06946485/patients/p01/decisions"


class Moving:
    """A clock the test moves: 21:30 in Nanjing is 13:30 UTC of the same day."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Moving:
    return Moving()


@pytest.fixture
def client(settings: Settings, clock: Moving) -> Iterator[TestClient]:
    with TestClient(app_for(settings, clock=Clock(NANJING, clock))) as client:
        yield client


@pytest.fixture
def bearer(make_token: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    def headers(scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scope=scope)}"}

    return headers


READ_WRITE = "cohort-match/decisions.read cohort-match/decisions.write"


def _audit_rows(client: TestClient) -> list[Any]:
    return list(reversed(state_of(client.app).audit.recent()))  # type: ignore[arg-type]


def _stored(client: TestClient) -> list[str]:
    store = state_of(client.app).decisions  # type: ignore[arg-type]
    return [d.state for d in store.history("NCT06946485", "Patient/p01")]


def test_decisions_are_kept_in_order_with_who_when_and_why(
    client: TestClient, bearer: Callable[[str], dict[str, str]], clock: Moving
) -> None:
    headers = bearer(READ_WRITE)
    assert client.get(PATH, headers=headers).json() == {
        "trial": "NCT06946485",
        "patient": "Patient/p01",
        "current": None,
        "open": False,
        "decisions": [],
        "research_subject": None,
    }
    first = client.post(PATH, json={"state": "to_review"}, headers=headers)
    assert first.status_code == 201
    assert first.json() == {
        "trial": "NCT06946485",
        "patient": "Patient/p01",
        "state": "to_review",
        "note": None,
        "criterion": None,
        "until": None,
        "by": "coordinator-7",
        "at": "2026-11-27T13:30:00Z",
        # write-back is off by default: the decision is kept here only, and says so
        "write_back": {
            "outcome": "off",
            "status": "potential-candidate",
            "resource": f"ResearchSubject/{subject_id('NCT06946485', 'Patient/p01')}",
            "detail": None,
        },
    }
    clock.now += dt.timedelta(hours=1)
    client.post(PATH, json={"state": "contacted", "note": "phoned"}, headers=headers)
    clock.now += dt.timedelta(days=1)
    failed = {"state": "screen_failed", "criterion": "I5", "note": "repeat lab out of range"}
    assert client.post(PATH, json=failed, headers=headers).status_code == 201

    history = client.get(PATH, headers=headers).json()
    assert "write_back" not in history["decisions"][0]  # a decision's history, not its write
    assert history["research_subject"]["write_back"] == "off"
    assert history["research_subject"]["status"] is None  # nothing was ever written
    assert [d["state"] for d in history["decisions"]] == ["to_review", "contacted", "screen_failed"]
    assert [d["at"] for d in history["decisions"]] == [
        "2026-11-27T13:30:00Z",
        "2026-11-27T14:30:00Z",
        "2026-11-28T14:30:00Z",
    ]
    assert history["decisions"][1]["note"] == "phoned"
    assert history["current"] == history["decisions"][-1]
    assert (history["current"]["criterion"], history["open"]) == ("I5", True)


def test_not_now_is_open_until_its_date(
    client: TestClient, bearer: Callable[[str], dict[str, str]], clock: Moving
) -> None:
    headers = bearer(READ_WRITE)
    body = {"state": "not_now", "until": "2026-12-01", "note": "travelling"}
    assert client.post(PATH, json=body, headers=headers).status_code == 201
    assert client.get(PATH, headers=headers).json()["open"] is True
    # Nanjing's 1 December begins at 16:00 UTC on 30 November.
    clock.now = dt.datetime(2026, 11, 30, 16, 0, tzinfo=dt.UTC)
    history = client.get(PATH, headers=headers).json()
    assert (history["open"], history["current"]["state"]) == (False, "not_now")


def test_reading_does_not_grant_writing(
    client: TestClient, bearer: Callable[[str], dict[str, str]]
) -> None:
    response = client.post(PATH, json={"state": "declined"}, headers=bearer("cohort-match/*.read"))
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert "cohort-match/decisions.write" in response.json()["issue"][0]["diagnostics"]
    assert _stored(client) == []
    assert client.get(PATH, headers=bearer("cohort-match/*.read")).status_code == 200
    refused = client.get(PATH, headers=bearer("cohort-match/decisions.write"))
    assert refused.status_code == 403
    assert client.get(PATH).status_code == 401
    rows = _audit_rows(client)
    assert [(r.action, r.outcome) for r in rows] == [
        ("decision", "error 403"),
        ("decisions", "0 decisions"),
        ("decisions", "error 403"),
        ("decisions", "error 401"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        (PATH, {"state": "screen_failed"}, 422, "criterion is required"),
        (PATH, {"state": "declined", "criterion": "I5"}, 422, "only with it"),
        (PATH, {"state": "not_now"}, 422, "until is required"),
        (PATH, {"state": "maybe"}, 422, "state"),
        (PATH, {"state": "declined", "who": "someone"}, 422, "who"),
        (PATH, {"state": "declined", "note": "x" * 2001}, 422, "note"),
        (PATH, {"state": "screen_failed", "criterion": "I99"}, 422, "not a criterion"),
        (PATH, {"state": "not_now", "until": "2026-11-27"}, 422, "not after today"),
        ("/trials/NCT00000000/patients/p01/decisions", {"state": "declined"}, 404, "unknown"),
        ("/trials/NCT06946485/patients/p_01/decisions", {"state": "declined"}, 400, "FHIR"),
    ],
    ids=[
        "screen-failed-without-criterion",
        "criterion-without-screen-failed",
        "not-now-without-date",
        "unknown-state",
        "unknown-field",
        "note-too-long",
        "unknown-criterion",
        "date-not-ahead",
        "unknown-trial",
        "invalid-patient-id",
    ],
)
def test_invalid_decisions_are_refused_as_operation_outcomes_and_not_stored(
    client: TestClient,
    bearer: Callable[[str], dict[str, str]],
    path: str,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    response = client.post(path, json=body, headers=bearer(READ_WRITE))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/fhir+json"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert says in outcome["issue"][0]["diagnostics"]
    assert _stored(client) == []
    (row,) = _audit_rows(client)
    assert (row.action, row.outcome) == ("decision", f"error {status}")


def test_every_call_is_audited_with_patient_trial_and_caller(
    client: TestClient, bearer: Callable[[str], dict[str, str]]
) -> None:
    headers = bearer(READ_WRITE)
    client.post(PATH, json={"state": "declined", "note": "not interested"}, headers=headers)
    client.get(PATH, headers=headers)
    rows = _audit_rows(client)
    assert [
        (r.action, r.trial_id, r.patients, r.subject, r.client_id, r.outcome) for r in rows
    ] == [
        ("decision", "NCT06946485", '["Patient/p01"]', "coordinator-7", "ehr", "recorded declined"),
        ("decisions", "NCT06946485", '["Patient/p01"]', "coordinator-7", "ehr", "1 decisions"),
    ]
    # The coordinator's note is the decision's, never the audit trail's.
    assert all("not interested" not in r.outcome for r in rows)


def test_a_decision_whose_call_cannot_be_audited_is_not_stored(
    client: TestClient, bearer: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_: object) -> None:
        raise AuditUnavailable("the access could not be audited; try again later")

    monkeypatch.setattr(state_of(client.app).audit, "record", refuse)  # type: ignore[arg-type]
    response = client.post(PATH, json={"state": "enrolled"}, headers=bearer(READ_WRITE))
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _stored(client) == []


# ---------------------------------------------------------------- write-back
@pytest.fixture
def writing(settings: Settings, clock: Moving) -> Iterator[TestClient]:
    """The app with write-back on, to the FHIR server respx stands in for."""
    on = settings.model_copy(update={"sweep_write_back": True})
    with TestClient(app_for(on, clock=Clock(NANJING, clock))) as client:
        yield client


def _subject(bundle: dict[str, Any]) -> dict[str, Any]:
    [subject] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "ResearchSubject"]
    return subject


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("to_review", "potential-candidate"),
        ("contacted", "screening"),
        ("consented", "pending-on-study"),
        ("declined", "not-registered"),
        ("enrolled", "on-study"),
    ],
)
def test_a_decision_is_written_to_the_patients_research_subject(
    writing: TestClient, bearer: Callable[[str], dict[str, str]], state: str, status: str
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        answer = writing.post(PATH, json={"state": state}, headers=bearer(READ_WRITE))
    assert answer.status_code == 201
    resource = f"ResearchSubject/{subject_id('NCT06946485', 'Patient/p01')}"
    assert answer.json()["write_back"] == {
        "outcome": "written",
        "status": status,
        "resource": resource,
        "detail": None,
    }
    # One transaction: the ResearchStudy it refers to, and the patient's ResearchSubject,
    # PUT to the ids a sweep's write-back uses.
    bundle = json.loads(route.calls.last.request.content)
    assert bundle["type"] == "transaction"
    assert [e["request"] for e in bundle["entry"]] == [
        {"method": "PUT", "url": "ResearchStudy/cm-NCT06946485"},
        {"method": "PUT", "url": resource},
    ]
    subject = _subject(bundle)["resource"]
    assert (subject["status"], subject["individual"]) == (status, {"reference": "Patient/p01"})
    known = writing.get(PATH, headers=bearer(READ_WRITE)).json()["research_subject"]
    assert (known["status"], known["source"], known["write_back"]) == (
        status,
        "decision",
        "written",
    )
    assert _stored(writing) == [state]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, text="maintenance"),  # temporary for a read; a write is sent once
        httpx.Response(422, json={"resourceType": "OperationOutcome", "issue": []}),
        httpx.ConnectError("refused"),
    ],
    ids=["503", "422", "no-connection"],
)
def test_a_failed_write_back_keeps_the_decision_and_says_so(
    writing: TestClient, bearer: Callable[[str], dict[str, str]], answer: Any
) -> None:
    with respx.mock() as mock:
        if isinstance(answer, Exception):
            route = mock.post(FHIR).mock(side_effect=answer)
        else:
            route = mock.post(FHIR).mock(return_value=answer)
        response = writing.post(PATH, json={"state": "contacted"}, headers=bearer(READ_WRITE))
    assert route.call_count == 1  # never retried as a POST
    assert response.status_code == 201
    write_back = response.json()["write_back"]
    assert (write_back["outcome"], write_back["status"]) == ("failed", "screening")
    assert write_back["detail"]
    assert _stored(writing) == ["contacted"]  # the decision was stored first
    known = writing.get(PATH, headers=bearer(READ_WRITE)).json()["research_subject"]
    assert (known["status"], known["write_back"]) == (None, "failed")
    assert known["detail"] == write_back["detail"]
    [row] = [r for r in _audit_rows(writing) if r.action == "decision"]
    assert row.outcome == "recorded contacted"


def test_no_write_back_when_the_decision_cannot_be_audited(
    writing: TestClient, bearer: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_: object) -> None:
        raise AuditUnavailable("the access could not be audited; try again later")

    monkeypatch.setattr(state_of(writing.app).audit, "record", refuse)  # type: ignore[arg-type]
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        response = writing.post(PATH, json={"state": "enrolled"}, headers=bearer(READ_WRITE))
    assert response.status_code == 503
    assert route.call_count == 0
    assert _stored(writing) == []
