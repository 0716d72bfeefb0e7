"""GET /patients/{id}/trials: one patient against every trial served, best fit first."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.config import Settings
from tests.api.conftest import FakeFhir

URL = "/patients/{}/trials?as_of=2026-11-20"
P05_OUT = (
    "fails I6.hgb: Hemoglobin mass concentration in blood 58 g/L >= 60 g/L on 2026-11-10: not met"
)


def _audit_rows(settings: Settings) -> list[tuple[str, str | None, str, str]]:
    engine = create_engine(settings.database_url)
    with engine.connect() as db:
        rows = db.execute(
            text("select action, trial_id, patients, outcome from audit_events order by id")
        ).all()
    engine.dispose()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def test_every_trial_is_listed_best_fit_first(api: TestClient, auth: dict[str, str]) -> None:
    response = api.get(URL.format("p01"), headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["patient"], body["as_of"]) == ("Patient/p01", "2026-11-20")
    rows = body["trials"]
    assert [r["trial_id"] for r in rows] == ["NCT06946485", "NCT06421701"]
    assert [r["rank"] for r in rows] == [1, 2]
    first, second = rows
    assert (first["status"], first["score"]) == ("likely_eligible", 1.0)
    # no platelet count on record: the CAR-NK trial's cheapest open check says so
    assert second["status"] == "possibly_eligible"
    assert second["next_step"].startswith("I7.plt: Order a complete blood count.")
    assert first["title"].startswith("Universal anti-CD70 CAR-T")


def test_the_rows_are_what_match_says_for_each_trial(api: TestClient, auth: dict[str, str]) -> None:
    rows = api.get(URL.format("p05"), headers=auth).json()["trials"]
    for row in rows:
        match = api.post(
            f"/trials/{row['trial_id']}/match",
            json={"patient": "p05", "as_of": "2026-11-20"},
            headers=auth,
        ).json()
        assert (row["status"], row["score"], row["next_step"]) == (
            match["status"],
            match["score"],
            match["next_step"],
        )
    assert {r["trial_id"]: r["next_step"] for r in rows}["NCT06946485"] == P05_OUT
    assert all(r["status"] == "ineligible" for r in rows)
    assert [r["fails"] for r in rows] == [1, 1]


def test_the_patient_is_fetched_once_for_every_trial(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    reads: list[str] = []

    def counting(request: httpx.Request) -> httpx.Response:
        """Count the Patient reads, then answer as the demo server does."""
        reads.append(request.url.path)
        fault = fake_fhir.faults.pop("Patient")
        try:
            return fake_fhir.handle(request)
        finally:
            fake_fhir.faults["Patient"] = fault

    fake_fhir.faults["Patient"] = counting
    assert api.get(URL.format("p01"), headers=auth).status_code == 200
    assert reads == ["/fhir/Patient/p01"]


def test_needs_the_match_read_scope_and_audits_every_call(
    api: TestClient, make_token: Callable[..., str], settings: Settings
) -> None:
    only_sweeps = {"Authorization": f"Bearer {make_token('cohort-match/sweeps.read')}"}
    assert api.get(URL.format("p01"), headers=only_sweeps).status_code == 403
    assert api.get(URL.format("p01")).status_code == 401
    match_read = {"Authorization": f"Bearer {make_token('cohort-match/match.read')}"}
    assert api.get(URL.format("p05"), headers=match_read).status_code == 200
    rows = [r for r in _audit_rows(settings) if r[0] == "patient-trials"]
    assert ("patient-trials", None, "[]", "error 403") in rows
    (read,) = [r for r in rows if r[3].startswith("NCT")]
    assert read[2] == '["Patient/p05"]'
    assert read[3] == "NCT06421701 ineligible, NCT06946485 ineligible"  # no clinical values


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param(URL.format("nobody"), 404, id="unknown-patient"),
        pytest.param(URL.format("p%24x"), 422, id="not-a-fhir-id"),
        pytest.param("/patients/p01/trials?as_of=1899-12-31", 422, id="as-of-out-of-range"),
        pytest.param("/patients/p01/trials?as_of=1950-01-01", 422, id="before-birth"),
    ],
)
def test_refusals_are_operation_outcomes(
    api: TestClient, auth: dict[str, str], path: str, status: int
) -> None:
    response = api.get(path, headers=auth)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_contract_publishes_it() -> None:
    from service.openapi import build_openapi

    spec = build_openapi()
    operation = spec["paths"]["/patients/{patient_id}/trials"]["get"]
    assert "PatientTrialsPublic" in str(operation["responses"]["200"])
