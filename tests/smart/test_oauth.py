"""Discovery, PKCE and token responses, against respx (the faults a real EHR won't make)."""

from __future__ import annotations

import httpx
import pytest
import respx

from service.smart import oauth
from service.smart.errors import AuthorizationDenied, EhrUnavailable

ISS = "https://ehr.test/fhir"
WELL_KNOWN = f"{ISS}/.well-known/smart-configuration"


def test_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_and_states_are_long_and_unreserved() -> None:
    verifier = oauth.new_verifier()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert oauth.new_state() != oauth.new_state()


def test_authorize_url_carries_every_smart_parameter() -> None:
    config = oauth.SmartConfiguration("https://ehr.test/auth?tenant=1", "https://ehr.test/token")
    url = oauth.authorize_url(
        config,
        client_id="c",
        redirect_uri="https://app/cb",
        scope="launch openid",
        state="st",
        aud=ISS,
        challenge="ch",
        launch="L1",
    )
    query = httpx.URL(url).params
    assert url.startswith("https://ehr.test/auth?tenant=1&")
    assert dict(query) == {
        "tenant": "1",
        "response_type": "code",
        "client_id": "c",
        "redirect_uri": "https://app/cb",
        "scope": "launch openid",
        "state": "st",
        "aud": ISS,
        "code_challenge": "ch",
        "code_challenge_method": "S256",
        "launch": "L1",
    }


async def _discover(body: object, status: int = 200) -> oauth.SmartConfiguration:
    with respx.mock:
        respx.get(WELL_KNOWN).mock(return_value=httpx.Response(status, json=body))
        async with httpx.AsyncClient() as http:
            return await oauth.discover(http, ISS + "/")


async def test_discovery_reads_the_endpoints() -> None:
    config = await _discover(
        {
            "authorization_endpoint": "https://ehr.test/authorize",
            "token_endpoint": "https://ehr.test/token",
            "issuer": ISS,
            "jwks_uri": "https://ehr.test/jwks",
            "capabilities": ["launch-ehr", 7],
            "code_challenge_methods_supported": ["S256"],
        }
    )
    assert config.token_endpoint == "https://ehr.test/token"  # noqa: S105 - a URL
    assert config.capabilities == frozenset({"launch-ehr"})


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"authorization_endpoint": "https://e/a"}, 200, "names no authorization and token"),
        ({"authorization_endpoint": "/relative", "token_endpoint": "https://e/t"}, 200, "names no"),
        (
            {
                "authorization_endpoint": "https://e/a",
                "token_endpoint": "https://e/t",
                "code_challenge_methods_supported": ["plain"],
            },
            200,
            "does not support PKCE with S256",
        ),
        ({}, 404, "answered HTTP 404"),
        (["not", "an", "object"], 200, "JSON object"),
    ],
)
async def test_discovery_refusals(body: object, status: int, words: str) -> None:
    with pytest.raises(EhrUnavailable, match=words):
        await _discover(body, status)


async def test_discovery_of_an_unreachable_server() -> None:
    with respx.mock:
        respx.get(WELL_KNOWN).mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as http:
            with pytest.raises(EhrUnavailable, match="Could not reach"):
                await oauth.discover(http, ISS)


async def _exchange(response: httpx.Response, secret: str | None = None) -> oauth.TokenResponse:
    with respx.mock:
        route = respx.post("https://ehr.test/token").mock(return_value=response)
        async with httpx.AsyncClient() as http:
            tokens = await oauth.exchange_code(
                http,
                "https://ehr.test/token",
                code="c",
                verifier="v",
                redirect_uri="r",
                client_id="app",
                client_secret=secret,
            )
        sent = route.calls.last.request
        form = dict(httpx.QueryParams(sent.content.decode()))
        assert form["code_verifier"] == "v"
        assert ("client_id" in form) == (secret is None)
        assert ("authorization" in sent.headers) == (secret is not None)
        return tokens


async def test_token_response_quirks_are_tolerated() -> None:
    tokens = await _exchange(
        httpx.Response(
            200,
            json={
                "access_token": "a",
                "token_type": "bearer",
                "expires_in": "120",
                "scope": "s",
                "patient": "p1",
                "need_patient_banner": False,
            },
        ),
        secret="x",  # noqa: S106 - a test value
    )
    assert (tokens.expires_in, tokens.patient, tokens.need_patient_banner) == (120, "p1", False)
    missing = await _exchange(
        httpx.Response(200, json={"access_token": "a", "token_type": "Bearer"})
    )
    assert missing.expires_in == oauth.DEFAULT_EXPIRES_IN_S
    assert missing.refresh_token is None


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            httpx.Response(400, json={"error": "invalid_grant", "error_description": "used"}),
            AuthorizationDenied,
            "invalid_grant: used",
        ),
        (httpx.Response(503, json={"error": "temporarily_unavailable"}), EhrUnavailable, "failed"),
        (httpx.Response(502, text="<html>bad gateway</html>"), EhrUnavailable, "HTTP 502"),
        (httpx.Response(200, json={"token_type": "Bearer"}), EhrUnavailable, "no access_token"),
        (
            httpx.Response(200, json={"access_token": "a", "token_type": "MAC"}),
            EhrUnavailable,
            "only Bearer",
        ),
        *(
            (
                httpx.Response(
                    200, json={"access_token": "a", "token_type": "Bearer", "patient": bad}
                ),
                AuthorizationDenied,
                "not a FHIR id",
            )
            for bad in ("p01#x", "..", "p01?_id=p02", 42)
        ),
    ],
)
async def test_token_refusals(response: httpx.Response, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        await _exchange(response)
