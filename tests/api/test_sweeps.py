"""The sweeps API: start, follow, read; scopes; audit rows; errors as OperationOutcomes."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle

from service.app_state import state_of
from service.audit import AuditStore
from service.config import Settings
from service.schemas import RankedListPublic
from service.sweeps import BackgroundSweeps, SweepStore
from service.sweeps.schemas import AttritionPublic, DiffPublic, SweepPublic
from tests.conftest import app_for
from tests.sweeps.conftest import DEMO

READ = "cohort-match/sweeps.read"
WRITE = "cohort-match/sweeps.write"
BODY = {"trial": "NCT06946485", "as_of": "2026-11-20"}


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"sweep_data_dir": DEMO, "sweep_heartbeat_s": 0.2, "sweep_workers": 1}
    )


@pytest.fixture
def client(sweep_settings: Settings) -> Iterator[TestClient]:
    with TestClient(app_for(sweep_settings)) as client:
        yield client


@pytest.fixture
def token(make_token: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    def headers(scope: str = f"{READ} {WRITE}") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scope)}"}

    return headers


def _background(client: TestClient) -> BackgroundSweeps:
    return state_of(client.app).sweeps


def _sweep(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/sweeps", json=BODY, headers=headers)
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == f"/sweeps/{run['id']}"
    _background(client).wait(run["id"], timeout=60)
    return run


def _audit(settings: Settings) -> list[tuple[str, str | None, str, str, list[str]]]:
    store = AuditStore(settings.database_url)
    try:
        return [
            (e.action, e.trial_id, e.outcome, e.subject, json.loads(e.patients))
            for e in reversed(store.recent(200))
        ]
    finally:
        store.close()


def _outcome(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert text in body["issue"][0]["diagnostics"]


def test_start_follow_and_read_a_sweep(
    client: TestClient, token: Callable[..., dict[str, str]], sweep_settings: Settings
) -> None:
    started = SweepPublic.model_validate(_sweep(client, token()))
    assert started.status == "running"
    assert started.requested_by == "coordinator-7"
    assert started.source.kind == "files"
    run = client.get(f"/sweeps/{started.id}", headers=token(READ)).json()
    assert run["status"] == "completed"
    assert run["counts"]["patients"] == 71
    assert run["progress"] == {"stage": "done", "done": 71, "total": 71}
    assert run["results_available"] is True

    ranked = client.get(f"/sweeps/{started.id}/candidates", headers=token(READ))
    assert ranked.status_code == 200
    body = RankedListPublic.model_validate(ranked.json())
    assert [c.rank for c in body.candidates] == list(range(1, 72))
    assert body.counts.likely_eligible == 17

    table = client.get(f"/sweeps/{started.id}/candidates?format=csv&limit=5", headers=token(READ))
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0][:8] == [
        "rank",
        "patient",
        "name",
        "mrn",
        "identifiers",
        "status",
        "status_reason",
        "score",
    ]
    assert len(rows) == 6

    fhir = client.get(f"/sweeps/{started.id}/candidates?format=fhir", headers=token(READ))
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(fhir.json())
    assert len(bundle.entry) == 2 + 35

    funnel = AttritionPublic.model_validate(
        client.get(f"/sweeps/{started.id}/attrition", headers=token(READ)).json()
    )
    assert (funnel.patients, funnel.remaining) == (71, 35)

    _outcome(
        client.get(f"/sweeps/{started.id}/diff", headers=token(READ)),
        404,
        f"no completed sweep of NCT06946485 before run {started.id}",
    )
    second = _sweep(client, token())
    diff = DiffPublic.model_validate(
        client.get(f"/sweeps/{second['id']}/diff", headers=token(READ)).json()
    )
    assert diff.against.id == started.id
    assert diff.counts == {
        "new": 0,
        "dropped": 0,
        "status": 0,
        "verdicts": 0,
        "arrived": 0,
        "left": 0,
        "decided": 0,
        "unchanged": 71,
    }
    named = client.get(f"/sweeps/{second['id']}/diff?against={started.id}", headers=token(READ))
    assert named.json()["against"]["id"] == started.id

    listed = client.get("/sweeps?trial=NCT06946485", headers=token(READ)).json()["runs"]
    assert [r["id"] for r in listed] == [second["id"], started.id]

    audit = _audit(sweep_settings)
    actions = [(a, t, o) for a, t, o, _, _ in audit]
    assert ("sweep-start", "NCT06946485", f"started run {started.id}") in actions
    assert ("sweep-status", "NCT06946485", f"run {started.id} completed") in actions
    assert ("sweep-candidates-csv", "NCT06946485", f"run {started.id}: 5 results as csv") in actions
    assert ("sweep-candidates-fhir", "NCT06946485", f"run {started.id}: 35 results as fhir") in (
        actions
    )
    assert ("sweep-diff", "NCT06946485", f"runs {started.id}->{second['id']}: 0 changed") in (
        actions
    )
    assert ("sweep-diff", "NCT06946485", "error 404") in actions
    exported = next(p for a, _, _, _, p in audit if a == "sweep-candidates-json")
    assert len(exported) == 71
    assert exported[0] == "Patient/p01"
    assert {s for _, _, _, s, _ in audit} == {"coordinator-7"}


def test_scopes(client: TestClient, token: Callable[..., dict[str, str]]) -> None:
    _outcome(client.post("/sweeps", json=BODY), 401, "a bearer token is required")
    _outcome(client.get("/sweeps/1"), 401, "a bearer token is required")
    for scope in (READ, "cohort-match/*.read", "cohort-match/match.read"):
        _outcome(
            client.post("/sweeps", json=BODY, headers=token(scope)),
            403,
            f"token lacks scope {WRITE}",
        )
    _outcome(client.get("/sweeps", headers=token(WRITE)), 403, f"token lacks scope {READ}")
    _outcome(client.get("/sweeps/1", headers=token("cohort-match/match.read")), 403, READ)
    refused = [(a, o) for a, _, o, _, _ in _audit(state_of(client.app).settings)]
    assert refused.count(("sweep-start", "error 403")) == 3
    run = _sweep(client, token("cohort-match/*.write"))
    assert (
        client.get(f"/sweeps/{run['id']}", headers=token("cohort-match/*.read")).status_code == 200
    )


def test_errors_are_operation_outcomes(
    client: TestClient, token: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _outcome(client.post("/sweeps", json={"trial": "NCT0"}, headers=token()), 404, "unknown trial")
    _outcome(client.post("/sweeps", json={"as_of": "x"}, headers=token()), 422, "trial")
    _outcome(client.get("/sweeps/99", headers=token()), 404, "no sweep run 99")
    _outcome(client.get("/sweeps/x", headers=token()), 422, "run_id")
    _outcome(client.get("/sweeps/99/attrition", headers=token()), 404, "no sweep run 99")
    huge = 9223372036854775808  # past every database integer
    for path in (f"/sweeps/{huge}", f"/sweeps/{2**31}/diff", "/sweeps/0", "/sweeps/-1/attrition"):
        _outcome(client.get(path, headers=token()), 422, "run_id")
    _outcome(client.get(f"/sweeps/1/diff?against={huge}", headers=token()), 422, "against")
    _outcome(client.get(f"/sweeps/1/candidates?limit={huge}", headers=token()), 422, "limit")

    release = threading.Event()
    add = SweepStore.add_results

    def held(self: SweepStore, *args: Any, **kwargs: Any) -> None:
        release.wait(30)
        add(self, *args, **kwargs)

    monkeypatch.setattr(SweepStore, "add_results", held)
    running = client.post("/sweeps", json=BODY, headers=token()).json()
    try:
        _outcome(
            client.post("/sweeps", json=BODY, headers=token()),
            409,
            f"a sweep of NCT06946485 is already running (run {running['id']}",
        )
        _outcome(
            client.get(f"/sweeps/{running['id']}/candidates", headers=token()),
            409,
            f"run {running['id']} is running",
        )
        _outcome(
            client.get(f"/sweeps/{running['id']}/candidates?format=xml", headers=token()),
            422,
            "format",
        )
        cancelled = client.post(f"/sweeps/{running['id']}/cancel", headers=token())
        assert cancelled.status_code == 202
    finally:
        release.set()
    assert _background(client).wait(running["id"], timeout=30).status == "cancelled"
    after = client.get(f"/sweeps/{running['id']}", headers=token()).json()
    assert after["status"] == "cancelled"
    assert after["results_available"] is False


def test_without_a_configured_source_a_sweep_is_a_bad_request(
    settings: Settings, token: Callable[..., dict[str, str]]
) -> None:
    plain = settings.model_copy(update={"fhir_base_url": None})
    with TestClient(app_for(plain)) as client:
        _outcome(
            client.post("/sweeps", json=BODY, headers=token()), 400, "no sweep source configured"
        )


def test_with_auth_disabled_on_loopback_sweeps_can_be_started(tmp_path: Any) -> None:
    settings = Settings(
        auth_disabled=True,
        sweep_data_dir=DEMO,
        database_url=f"sqlite:///{tmp_path / 'open.db'}",
    )
    with TestClient(app_for(settings)) as client:
        run = _sweep(client, {})
        assert client.get(f"/sweeps/{run['id']}").json()["status"] == "completed"


def test_the_app_starts_sweeps_in_its_lifespan(
    settings: Settings, token: Callable[..., dict[str, str]]
) -> None:
    with TestClient(app_for(settings)) as client:
        response = client.get("/sweeps", headers=token())
    assert response.status_code == 200, response.text


def test_the_schedule_runs_in_the_app(
    sweep_settings: Settings, token: Callable[..., dict[str, str]]
) -> None:
    scheduled = sweep_settings.model_copy(
        update={"sweep_schedule": {"NCT06946485": "30 2 * * *"}, "sweep_timezone": "UTC"}
    )
    with TestClient(app_for(scheduled)) as client:
        scheduler = state_of(client.app).scheduler
        when = scheduler.next_runs()["NCT06946485"]
        assert (when.hour, when.minute) == (2, 30)
    bad = sweep_settings.model_copy(update={"sweep_schedule": {"NCT06946485": "nightly"}})
    with (
        pytest.raises(ValueError, match="neither a 5-field cron"),
        TestClient(app_for(bad)),
    ):
        pass
