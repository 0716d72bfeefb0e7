"""API test fixtures: signed tokens, a respx-backed FHIR server with the demo data, the app.

The integration tests (tests/integration) run the same endpoints against the real FHIR
server; here respx stands in so that faults can be injected on demand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from service.config import Settings
from tests.conftest import ROOT, app_for
from tests.fhir_tokens import token_matches

FHIR = "http://fhir.test/fhir"
ISSUER = "https://idp.hospital.test"
AUDIENCE = "cohort-match"
DEMO = ROOT / "demo" / "NCT06946485"


class FakeFhir:
    """Serves the demo Bundles: read by id, and search by patient (and Observation code)."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        for path in sorted(DEMO.glob("*.json")):
            self.resources += [
                e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]
            ]
        self.faults: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir/")
        kind = path.split("/")[0]
        if kind in self.faults:
            return self.faults[kind](request)
        if "/" in path:
            kind, ident = path.split("/", 1)
            for r in self.resources:
                if r["resourceType"] == kind and r["id"] == ident:
                    return httpx.Response(200, json=r)
            return httpx.Response(
                404,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "not-found"}],
                },
            )
        params = request.url.params
        found = [r for r in self.resources if r["resourceType"] == kind]
        if "patient" in params:
            field = {"AllergyIntolerance": "patient", "ResearchSubject": "individual"}.get(
                kind, "subject"
            )
            found = [r for r in found if r.get(field, {}).get("reference") == params["patient"]]
        if "code" in params:
            found = [r for r in found if token_matches(r["code"]["coding"], params["code"])]
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in found],
            },
        )


@pytest.fixture
def fake_fhir() -> Iterator[FakeFhir]:
    fake = FakeFhir()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="fhir.test").mock(side_effect=fake.handle)
        yield fake


@pytest.fixture(scope="session")
def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-1"})


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key: RSAKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(KeySet([signing_key]).as_dict(private=False)))
    return path


@pytest.fixture
def make_token(signing_key: RSAKey) -> Callable[..., str]:
    def make(scope: str = "cohort-match/*.read", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "coordinator-7",
            "client_id": "ehr",
            "iat": now,
            "exp": now + 300,
            "scope": scope,
        }
        body.update(claims)
        return jwt.encode(
            {"alg": "RS256", "kid": "idp-1"},
            {k: v for k, v in body.items() if v is not None},
            signing_key,
        )

    return make


@pytest.fixture
def settings(tmp_path: Path, jwks_file: Path) -> Settings:
    return Settings(
        fhir_base_url=FHIR,
        auth_jwks_file=jwks_file,
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        fhir_timeout_s=2,
    )


@pytest.fixture
def api(settings: Settings, fake_fhir: FakeFhir) -> Iterator[TestClient]:
    with TestClient(app_for(settings)) as client:
        yield client


@pytest.fixture
def auth(make_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token()}"}
