"""/healthz, /readyz, /trials, and the published contract."""

from __future__ import annotations

import json

import httpx
from fastapi.testclient import TestClient

from service.openapi import build_openapi
from tests.api.conftest import FakeFhir
from tests.conftest import ROOT


def test_healthz_needs_nothing(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_the_fhir_server(api: TestClient, fake_fhir: FakeFhir) -> None:
    fake_fhir.faults["metadata"] = lambda r: httpx.Response(
        200, json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
    )
    assert api.get("/readyz").json() == {
        "status": "ready",
        "trials": ["NCT06421701", "NCT06946485"],
        "fhir": "4.0.1",
    }
    fake_fhir.faults["metadata"] = lambda r: httpx.Response(503)
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"


def test_trials_list_and_detail(api: TestClient, auth: dict[str, str]) -> None:
    listed = {t["id"]: t for t in api.get("/trials", headers=auth).json()}
    assert sorted(listed) == ["NCT06421701", "NCT06946485"]
    assert listed["NCT06946485"]["criteria"] == 35
    detail = api.get("/trials/NCT06946485", headers=auth).json()
    assert [c["id"] for c in detail["criteria"]][:3] == ["I1", "I2", "I3"]
    assert detail["criteria"][0]["assessment"] == "automatic"
    missing = api.get("/trials/NOPE", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_openapi_file_is_generated_from_the_app() -> None:
    published = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
    assert published == json.loads(json.dumps(build_openapi())), (
        "run: python scripts/export_openapi.py"
    )
    assert "/trials/{trial_id}/match" in published["paths"]
    assert "PatientResultPublic" in published["components"]["schemas"]
