"""Decisions and the ResearchSubjects on the real FHIR server (sekmet-fhir), write-back on.

A coordinator's decision recorded through the API is written to the patient's ResearchSubject;
the next sweep keeps it (the engine would say `candidate`); a status changed on the server (the
EHR's side) is read back by the following sweep as a decision by `ehr`, and one no decision
state reads is reported and left as it is. The server is this module's own: the test writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app_state import AppState, state_of
from service.config import Settings
from service.sweeps import Source
from service.sweeps.report import group_id
from service.worklist.research_subject import research_subject, subject_id
from tests.conftest import app_for
from tests.integration.conftest import running_server
from tests.sweeps.conftest import AS_OF, TRIAL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


@pytest.fixture
def api(own_server: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        fhir_base_url=own_server,
        sweep_write_back=True,
        auth_disabled=True,
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        sweep_workers=1,
    )
    with TestClient(app_for(settings)) as client:
        yield client


def _state(api: TestClient) -> AppState:
    return state_of(api.app)  # type: ignore[arg-type]


def _sweep(api: TestClient, server: str) -> Any:
    """A sweep of the server by the app's own runner (its worklist), in this thread."""
    run = _state(api).sweeps.runner.sweep(TRIAL, AS_OF, Source.fhir(server), "test", full=True)
    assert run.status == "completed", run.error
    assert run.write_back is not None
    assert run.write_back.startswith("ok: "), run.write_back
    return run


def _on_server(fhir: httpx.Client, patient: str) -> str:
    answer = fhir.get(f"ResearchSubject/{subject_id(TRIAL, patient)}")
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["status"]
    return status


def test_decisions_reach_the_research_subject_survive_a_sweep_and_come_back(
    api: TestClient, own_server: str
) -> None:
    first = _sweep(api, own_server)
    store = _state(api).sweeps.store
    candidates = [c.patient for c in store.summaries(first.id, candidates_only=True)]
    enrolled, declined, odd = candidates[:3]
    with httpx.Client(base_url=own_server + "/", timeout=30) as fhir:
        assert {_on_server(fhir, p) for p in (enrolled, declined, odd)} == {"candidate"}

        # A decision through the API is written back at once.
        path = f"/trials/{TRIAL}/patients/{enrolled.removeprefix('Patient/')}/decisions"
        answer = api.post(path, json={"state": "enrolled", "note": "signed and randomised"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["write_back"]["outcome"] == "written"
        assert _on_server(fhir, enrolled) == "on-study"

        # The next sweep still finds the patient a candidate, and leaves on-study alone.
        second = _sweep(api, own_server)
        assert _on_server(fhir, enrolled) == "on-study"
        assert second.write_back == (
            f"ok: {2 + len(candidates) - 1} resources written to {own_server}"
        )
        group = fhir.get(f"Group/{group_id(TRIAL)}").json()
        assert enrolled in {m["entity"]["reference"] for m in group["member"]}  # the engine's

        # On the EHR's side: one patient declines, another gets a status no state reads.
        for patient, status in ((declined, "not-registered"), (odd, "eligible")):
            changed = research_subject(TRIAL, patient, status)
            put = fhir.put(f"ResearchSubject/{changed['id']}", json=changed)
            assert put.status_code in (200, 201), put.text

        third = _sweep(api, own_server)
        assert f"ResearchSubject/{subject_id(TRIAL, odd)} status eligible" in third.write_back
        assert "1 decision(s) read back from the EHR" in third.write_back
        assert _on_server(fhir, declined) == "not-registered"  # not set back to candidate
        assert _on_server(fhir, odd) == "eligible"  # reported, left as the EHR has it
        assert _on_server(fhir, enrolled) == "on-study"

    path = f"/trials/{TRIAL}/patients/{declined.removeprefix('Patient/')}/decisions"
    history = api.get(path).json()
    assert [(d["state"], d["by"]) for d in history["decisions"]] == [("declined", "ehr")]
    assert history["decisions"][0]["note"] == (
        f"read back from ResearchSubject/{subject_id(TRIAL, declined)}: status not-registered"
    )
    assert history["research_subject"]["status"] == "not-registered"
    assert history["research_subject"]["source"] == "ehr"
    odd_path = f"/trials/{TRIAL}/patients/{odd.removeprefix('Patient/')}/decisions"
    assert api.get(odd_path).json()["decisions"] == []  # not guessed
    read_back = [r for r in _state(api).audit.recent() if r.action == "decision.read_back"]
    assert [(r.subject, r.outcome) for r in read_back] == [("ehr", "recorded 1 read back")]
