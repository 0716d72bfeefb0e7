"""SMART Backend Services: a signed client assertion, a cached token, clear failures."""

from __future__ import annotations

import httpx
import pytest
import respx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.errors import FhirAuthError, FhirTemporaryError
from service.fhir.auth import SmartBackendAuth, StaticBearer

TOKEN_URL = "http://auth.test/token"  # noqa: S105 - a URL, not a secret


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048)


def _auth(key: RSAKey) -> SmartBackendAuth:
    pem = key.as_pem(private=True)
    return SmartBackendAuth(
        TOKEN_URL, "cohort-match", pem, key_id="k1", algorithm="RS384", scope="system/Patient.rs"
    )


def test_assertion_is_signed_rs384_with_the_required_claims(rsa_key: RSAKey) -> None:
    token = _auth(rsa_key).assertion(now=1_800_000_000)
    decoded = jwt.decode(token, rsa_key, algorithms=["RS384"])
    assert decoded.header == {"alg": "RS384", "typ": "JWT", "kid": "k1"}
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == "cohort-match"
    assert claims["aud"] == TOKEN_URL
    assert claims["exp"] - claims["iat"] == 300
    assert len(claims["jti"]) == 32


def test_es384_keys_are_accepted_and_other_algorithms_refused(rsa_key: RSAKey) -> None:
    ec = ECKey.generate_key("P-384")
    auth = SmartBackendAuth(TOKEN_URL, "c", ec.as_pem(private=True), algorithm="ES384")
    assert jwt.decode(auth.assertion(), ec, algorithms=["ES384"]).claims["iss"] == "c"
    with pytest.raises(ValueError, match="RS384 or ES384"):
        SmartBackendAuth(TOKEN_URL, "c", rsa_key.as_pem(private=True), algorithm="RS256")


@respx.mock
async def test_token_is_requested_once_and_cached(rsa_key: RSAKey) -> None:
    route = respx.post(TOKEN_URL).respond(
        json={"access_token": "t1", "token_type": "bearer", "expires_in": 3600}
    )
    auth = _auth(rsa_key)
    async with httpx.AsyncClient() as http:
        assert await auth.header(http) == "Bearer t1"
        assert await auth.header(http) == "Bearer t1"
    assert route.call_count == 1
    form = dict(httpx.QueryParams(route.calls.last.request.content.decode()))
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "system/Patient.rs"


@respx.mock
async def test_a_token_near_expiry_is_refreshed(rsa_key: RSAKey) -> None:
    route = respx.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json={"access_token": "short", "expires_in": 30}),
            httpx.Response(200, json={"access_token": "long", "expires_in": 3600}),
        ]
    )
    auth = _auth(rsa_key)
    async with httpx.AsyncClient() as http:
        assert await auth.header(http) == "Bearer short"
        # 30 s lifetime is inside the 60 s safety margin: refreshed on next use
        assert await auth.header(http) == "Bearer long"
    assert route.call_count == 2


@respx.mock
async def test_refused_client_is_an_auth_error(rsa_key: RSAKey) -> None:
    respx.post(TOKEN_URL).respond(
        400, json={"error": "invalid_client", "error_description": "unknown key"}
    )
    async with httpx.AsyncClient() as http:
        with pytest.raises(FhirAuthError, match="unknown key"):
            await _auth(rsa_key).header(http)


@respx.mock
async def test_token_endpoint_down_is_temporary(rsa_key: RSAKey) -> None:
    respx.post(TOKEN_URL).respond(503)
    async with httpx.AsyncClient() as http:
        with pytest.raises(FhirTemporaryError):
            await _auth(rsa_key).header(http)


async def test_static_bearer() -> None:
    async with httpx.AsyncClient() as http:
        assert await StaticBearer("abc").header(http) == "Bearer abc"


# ---------------------------------------------------------------- as the client's httpx.Auth
FHIR = "http://fhir.test/fhir"


def _token_route(*tokens: str) -> respx.Route:
    return respx.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json={"access_token": t, "expires_in": 3600}) for t in tokens
        ]
    )


@respx.mock
async def test_the_client_fetches_the_token_and_signs_its_requests(rsa_key: RSAKey) -> None:
    from service.fhir.client import FhirClient

    tokens = _token_route("t1")
    route = respx.get(f"{FHIR}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    async with FhirClient(FHIR, auth=_auth(rsa_key)) as fhir:
        await fhir.read("Patient", "p1")
        await fhir.read("Patient", "p1")
    assert tokens.call_count == 1
    assert route.calls.last.request.headers["Authorization"] == "Bearer t1"


@respx.mock
async def test_a_401_gets_one_new_token_and_one_more_try(rsa_key: RSAKey) -> None:
    from service.fhir.client import FhirClient

    tokens = _token_route("old", "new", "newer")
    route = respx.get(f"{FHIR}/Patient/p1").mock(
        side_effect=[
            httpx.Response(401),
            httpx.Response(200, json={"resourceType": "Patient", "id": "p1"}),
        ]
    )
    async with FhirClient(FHIR, auth=_auth(rsa_key)) as fhir:
        assert (await fhir.read("Patient", "p1"))["id"] == "p1"
    assert tokens.call_count == 2
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer old",
        "Bearer new",
    ]


@respx.mock
async def test_a_second_401_is_an_auth_error_not_a_loop(rsa_key: RSAKey) -> None:
    from service.fhir.client import FhirClient

    tokens = _token_route("old", "new", "newer")
    route = respx.get(f"{FHIR}/Patient/p1").respond(401)
    async with FhirClient(FHIR, auth=_auth(rsa_key)) as fhir:
        with pytest.raises(FhirAuthError):
            await fhir.read("Patient", "p1")
    assert route.call_count == 2
    assert tokens.call_count == 2


@respx.mock
async def test_the_token_only_goes_to_the_fhir_servers_host() -> None:
    from service.fhir.auth import HostBound

    elsewhere = respx.get("http://elsewhere.test/x").respond(200)
    home = respx.get(f"{FHIR}/x").respond(200)
    auth = HostBound(StaticBearer("secret"), frozenset({"fhir.test"}))
    async with httpx.AsyncClient(auth=auth) as http:
        await http.get("http://elsewhere.test/x")
        await http.get(f"{FHIR}/x")
    assert "Authorization" not in elsewhere.calls.last.request.headers
    assert home.calls.last.request.headers["Authorization"] == "Bearer secret"
