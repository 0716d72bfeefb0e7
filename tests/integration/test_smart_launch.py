"""SMART launch end to end against the real FHIR server (sekmet-fhir) behind the test EHR.

The test EHR (tests/smart/ehr.py) authorizes and proxies /fhir/* to sekmet; the app knows
only the EHR. The pages must say what the API and the file screen say.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.conftest import app_for
from tests.smart.conftest import APP, AS_OF, file_verdicts, launch
from tests.smart.ehr import TestEhr

pytestmark = pytest.mark.integration
COHORT = f"/app/cohort?trial=NCT06946485&as_of={AS_OF}"


@pytest.fixture
def ehr(fhir_server: str) -> Iterator[TestEhr]:
    with TestEhr(fhir_server).running() as running:
        yield running


@pytest.fixture
def app(ehr: TestEhr, fhir_server: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        auth_disabled=True,
        smart_issuers=ehr.iss,
        smart_trial="NCT06946485",  # the trial the file screen compares (two are served)
        fhir_base_url=fhir_server,  # only for the API comparison below
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
    )
    with TestClient(app_for(settings), base_url=APP) as client:
        yield client


def _verdicts(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-criterion="([^"]+)" data-verdict="([^"]+)"', page))


@pytest.mark.parametrize("patient", ["p02", "p05", "p41", "p50"])
def test_the_checklist_equals_the_file_screen(app: TestClient, ehr: TestEhr, patient: str) -> None:
    launch(app, ehr, patient=patient)
    page = app.get("/app/patient", params={"as_of": AS_OF})
    assert page.status_code == 200
    assert _verdicts(page.text) == file_verdicts()[f"Patient/{patient}"]
    assert f'href="{ehr.iss}/' in page.text  # evidence links point at the EHR, not at sekmet


def test_the_cohort_ranks_like_the_candidates_api(app: TestClient, ehr: TestEhr) -> None:
    api = app.post("/trials/NCT06946485/candidates", json={"as_of": AS_OF}).json()
    expected = [c["patient"]["reference"] for c in api["candidates"]]
    assert len(expected) == api["counts"]["patients"] > 40
    flow = launch(app, ehr, patient=None, target=COHORT)
    assert flow.page is not None
    assert flow.page.status_code == 200
    assert re.findall(r'data-patient="([^"]+)"', flow.page.text) == expected
    download = app.get("/app/cohort.csv", params={"trial": "NCT06946485", "as_of": AS_OF})
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["patient"] for r in rows] == expected
    for row, candidate in zip(rows, api["candidates"], strict=True):
        assert row["status"] == candidate["status"]
        assert float(row["score"]) == candidate["score"]
        assert {c["id"]: c["verdict"] for c in candidate["criteria"]} == {
            k: v
            for k, v in row.items()
            if k
            not in (
                "rank",
                "patient",
                "name",
                "mrn",
                "identifiers",
                "status",
                "status_reason",
                "score",
                "age",
                "sex",
                "next_step",
            )
        }
