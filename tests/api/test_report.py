"""GET /trials/{trial_id}/report: the recruitment report as JSON and CSV, from recorded
decisions and completed sweeps; its scope, OperationOutcome errors, and its audit row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app_state import state_of
from service.clock import Clock
from service.config import Settings
from service.sweeps.store import RUNS, RunSpec
from service.worklist.model import Decision, DecisionState
from tests.conftest import app_for

NANJING = dt.timezone(dt.timedelta(hours=8))
TRIAL = "NCT06946485"
PATH = f"/trials/{TRIAL}/report"
NOW = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)
READ = "cohort-match/decisions.read"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(app_for(settings, clock=Clock(NANJING, lambda: NOW))) as client:
        yield client


@pytest.fixture
def bearer(make_token: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    def headers(scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scope=scope)}"}

    return headers


def decide(client: TestClient, patient: str, state: DecisionState, day: int, **fields: Any) -> None:
    state_of(client.app).decisions.record(  # type: ignore[arg-type]
        Decision(
            trial_id=TRIAL,
            patient=f"Patient/{patient}",
            state=state,
            subject="coordinator-7",
            at=dt.datetime(2026, 11, day, 10, tzinfo=NANJING),
            **fields,
        )
    )


def completed_sweep(client: TestClient, ended: dt.datetime, **counts: int) -> int:
    store = state_of(client.app).sweeps.store  # type: ignore[arg-type]
    spec = RunSpec(TRIAL, "1", "t", NOW.date(), "files", "/data", "test", criteria=[])
    run_id = store.claim(spec, stale_after_s=600)
    store.complete(run_id, counts={"patients": 0}, attrition={}, problems=[], transaction_time=None)
    # The store stamps the real time and counts its stored results; the report reads only
    # the run's end and counts, set here.
    with store.engine.begin() as conn:
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(ended_at=ended.astimezone(dt.UTC), **counts)
        )
    return run_id


@pytest.fixture
def recorded(client: TestClient) -> int:
    decide(client, "p01", "to_review", 2)
    decide(client, "p01", "contacted", 3)
    decide(client, "p02", "enrolled", 4)
    decide(client, "p03", "screen_failed", 5, criterion="I6.hgb")
    decide(client, "p04", "declined", 6)
    decide(client, "p06", "consented", 7)
    decide(client, "p05", "contacted", 20)  # outside the period asked for below
    completed_sweep(client, dt.datetime(2026, 11, 1, 9, tzinfo=NANJING), patients=30)
    return completed_sweep(
        client,
        dt.datetime(2026, 11, 10, 9, tzinfo=NANJING),
        patients=40,
        likely_eligible=3,
        possibly_eligible=4,
    )


def test_the_report_counts_the_period_as_json(
    client: TestClient, bearer: Callable[[str], dict[str, str]], recorded: int
) -> None:
    answer = client.get(
        PATH, params={"from": "2026-11-01", "to": "2026-11-15"}, headers=bearer(READ)
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "trial": TRIAL,
        "start": "2026-11-01",
        "end": "2026-11-15",
        "sweep": recorded,
        "screened": 40,
        "candidates": 7,
        "reviewed": 5,
        "to_review": 0,
        "contacted": 1,
        "consented": 1,
        "declined": 1,
        "screen_failed": 1,
        "enrolled": 1,
        "not_now": 0,
        "screen_failed_by_reason": {"I6.hgb": 1},
    }


def test_the_report_as_csv(
    client: TestClient, bearer: Callable[[str], dict[str, str]], recorded: int
) -> None:
    answer = client.get(
        PATH,
        params={"from": "2026-11-01", "to": "2026-11-15", "format": "csv"},
        headers=bearer(READ),
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "NCT06946485-report-2026-11-01-2026-11-15.csv" in answer.headers["content-disposition"]
    assert answer.text.splitlines() == [
        "measure,criterion,count",
        "screened,,40",
        "candidates,,7",
        "reviewed,,5",
        "to_review,,0",
        "contacted,,1",
        "consented,,1",
        "declined,,1",
        "screen_failed,,1",
        "enrolled,,1",
        "not_now,,0",
        "screen_failed,I6.hgb,1",
    ]


def test_the_period_defaults_to_the_last_30_days_to_today(
    client: TestClient, bearer: Callable[[str], dict[str, str]], recorded: int
) -> None:
    body = client.get(PATH, headers=bearer(READ)).json()
    assert (body["start"], body["end"]) == ("2026-10-29", "2026-11-27")
    assert body["reviewed"] == 6


@pytest.mark.parametrize(
    "params",
    [{"from": "2026-13-01"}, {"to": "yesterday"}, {"from": "2026-11-10", "to": "2026-11-09"}],
)
def test_a_bad_date_or_period_is_an_operation_outcome(
    client: TestClient, bearer: Callable[[str], dict[str, str]], params: dict[str, str]
) -> None:
    answer = client.get(PATH, params=params, headers=bearer(READ))
    assert answer.status_code == 422
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_an_unknown_trial_is_a_404_operation_outcome(
    client: TestClient, bearer: Callable[[str], dict[str, str]]
) -> None:
    answer = client.get("/trials/NCT00000000/report", headers=bearer(READ))
    assert answer.status_code == 404
    assert answer.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("scope", "status"),
    [("cohort-match/decisions.write", 403), ("cohort-match/*.read", 200), (READ, 200)],
)
def test_the_report_needs_the_decisions_read_scope(
    client: TestClient, bearer: Callable[[str], dict[str, str]], scope: str, status: int
) -> None:
    assert client.get(PATH, headers=bearer(scope)).status_code == status


def test_the_report_is_audited(client: TestClient, bearer: Callable[[str], dict[str, str]]) -> None:
    client.get(PATH, params={"from": "2026-11-01", "to": "2026-11-15"}, headers=bearer(READ))
    client.get(PATH, headers={})
    rows = list(reversed(state_of(client.app).audit.recent()))  # type: ignore[arg-type]
    assert [(r.action, r.trial_id, r.outcome) for r in rows[-2:]] == [
        ("report", TRIAL, "report 2026-11-01..2026-11-15"),
        ("report", TRIAL, "error 401"),
    ]


def test_a_sweep_that_ended_after_the_period_is_not_its_engine_count(
    client: TestClient, bearer: Callable[[str], dict[str, str]], recorded: int
) -> None:
    # 2026-11-16 00:30 in Nanjing is still 15 November in UTC: after the period in the zone.
    completed_sweep(client, dt.datetime(2026, 11, 16, 0, 30, tzinfo=NANJING), patients=99)
    params = {"from": "2026-11-01", "to": "2026-11-15"}
    body = client.get(PATH, params=params, headers=bearer(READ)).json()
    assert (body["sweep"], body["screened"]) == (recorded, 40)
    params = {"from": "2026-11-11", "to": "2026-11-15"}  # after both earlier sweeps
    body = client.get(PATH, params=params, headers=bearer(READ)).json()
    assert (body["sweep"], body["screened"], body["candidates"]) == (None, 0, 0)
