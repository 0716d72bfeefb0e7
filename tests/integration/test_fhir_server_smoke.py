"""The FHIR server the integration tests run against behaves as cohort-match relies on.

What we expect is read from the demo bundles themselves, so the tests follow the data.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.integration.conftest import DEMO, SmartServer

pytestmark = pytest.mark.integration

# Without it sekmet drops a search parameter it does not know and widens the search.
STRICT = {"Prefer": "handling=strict", "Accept": "application/fhir+json"}
LOINC_HEMOGLOBIN = ("http://loinc.org", "718-7")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def demo_resources(resource_type: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEMO.glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            if entry["resource"]["resourceType"] == resource_type:
                found.append(entry["resource"])
    return found


def has_coding(concept: dict[str, Any], system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in concept["coding"])


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The search matches; sekmet may add an OperationOutcome entry (search.mode outcome)."""
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def next_link(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def test_patient_search_pages_through_every_demo_patient(fhir_server: str) -> None:
    expected = sorted(p["id"] for p in demo_resources("Patient"))
    assert len(expected) > 10, "enough demo patients for several pages"
    seen: list[str] = []
    pages = 0
    url: str | None = f"{fhir_server}/Patient?_count=10"
    with httpx.Client(timeout=10) as http:
        while url:
            # sekmet's links are absolute, built from its configured base URL
            assert url.startswith(f"{fhir_server}/Patient?")
            bundle = http.get(url, headers=STRICT).raise_for_status().json()
            assert bundle["type"] == "searchset"
            assert bundle["total"] == len(expected)
            seen += [patient["id"] for patient in matches(bundle)]
            pages += 1
            url = next_link(bundle)
    assert pages == math.ceil(len(expected) / 10)
    assert sorted(seen) == expected


def test_observation_search_by_patient_and_loinc_code_finds_the_hemoglobin(
    fhir_server: str,
) -> None:
    expected = {
        o["id"]: o
        for o in demo_resources("Observation")
        if o["subject"]["reference"] == "Patient/p01" and has_coding(o["code"], *LOINC_HEMOGLOBIN)
    }
    assert expected, "the demo gives p01 a hemoglobin"
    response = httpx.get(
        f"{fhir_server}/Observation",
        params={"patient": "Patient/p01", "code": "|".join(LOINC_HEMOGLOBIN)},
        headers=STRICT,
    )
    assert response.status_code == 200
    found = {o["id"]: o for o in matches(response.json())}
    assert found.keys() == expected.keys()
    for oid, observation in found.items():
        assert observation["valueQuantity"] == expected[oid]["valueQuantity"]


def test_strict_handling_refuses_an_unknown_search_parameter(fhir_server: str) -> None:
    response = httpx.get(
        f"{fhir_server}/Observation",
        params={"patient": "Patient/p01", "not-a-parameter": "x"},
        headers=STRICT,
    )
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(i["severity"], i["code"]) for i in outcome["issue"]] == [("error", "not-supported")]
    assert "not-a-parameter" in outcome["issue"][0]["diagnostics"]


def test_lenient_handling_drops_an_unknown_search_parameter_with_a_warning(
    fhir_server: str,
) -> None:
    """Why we always send `Prefer: handling=strict`: otherwise the search silently widens."""
    params = {"patient": "Patient/p01", "_count": "1000"}
    everything = httpx.get(f"{fhir_server}/Observation", params=params).json()
    widened = httpx.get(
        f"{fhir_server}/Observation", params={**params, "not-a-parameter": "x"}
    ).json()
    assert widened["total"] == everything["total"] > 0
    outcomes = [e["resource"] for e in widened["entry"] if e["search"]["mode"] == "outcome"]
    assert [i["severity"] for o in outcomes for i in o["issue"]] == ["warning"]
    assert "not-a-parameter" not in next(
        link["url"] for link in widened["link"] if link["relation"] == "self"
    )


def client_assertion(server: SmartServer, key_pem: bytes | None = None) -> str:
    """A private_key_jwt client assertion (SMART Backend Services), valid for 5 minutes."""
    key_type = RSAKey if server.algorithm.startswith("RS") else ECKey
    key = key_type.import_key(key_pem or server.private_key_path.read_bytes())
    now = int(time.time())
    claims = {
        "iss": server.client_id,
        "sub": server.client_id,
        "aud": server.token_url,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": server.algorithm, "typ": "JWT", "kid": server.key_id}
    return jwt.encode(header, claims, key, algorithms=[server.algorithm])


def request_token(server: SmartServer, assertion: str) -> httpx.Response:
    return httpx.post(
        server.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def test_auth_server_refuses_a_request_without_a_token(fhir_server_auth: SmartServer) -> None:
    response = httpx.get(f"{fhir_server_auth.base_url}/Patient", headers=STRICT)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"


def test_auth_server_advertises_its_token_endpoint(fhir_server_auth: SmartServer) -> None:
    config = httpx.get(f"{fhir_server_auth.base_url}/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == fhir_server_auth.token_url
    assert fhir_server_auth.algorithm in config["token_endpoint_auth_signing_alg_values_supported"]


def test_auth_server_accepts_a_token_from_a_private_key_jwt_assertion(
    fhir_server_auth: SmartServer,
) -> None:
    response = request_token(fhir_server_auth, client_assertion(fhir_server_auth))
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "system/*.rs"
    assert token["expires_in"] > 0
    patients = httpx.get(
        f"{fhir_server_auth.base_url}/Patient",
        params={"_count": "1"},
        headers={**STRICT, "Authorization": f"Bearer {token['access_token']}"},
    )
    assert patients.status_code == 200
    assert patients.json()["total"] == len(demo_resources("Patient"))


def test_auth_server_refuses_an_assertion_signed_with_another_key(
    fhir_server_auth: SmartServer,
) -> None:
    stranger = RSAKey.generate_key(2048, private=True).as_pem(private=True)
    response = request_token(fhir_server_auth, client_assertion(fhir_server_auth, stranger))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
