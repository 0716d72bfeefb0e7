"""The OAuth 2.0 side of SMART App Launch 2.x: discovery, PKCE, code exchange, refresh.

- Discovery: `GET {iss}/.well-known/smart-configuration` (SMART 2.x "Conformance"); the
  authorize and token endpoints come from there, never from the launch request.
- PKCE (RFC 7636) with S256 only, as SMART 2.x requires; `plain` is never offered.
- Client authentication at the token endpoint: a public client sends `client_id` in the body;
  a confidential one (a secret is configured) uses HTTP Basic (`client_secret_basic`).
- The id_token, when the EHR sends one and publishes `jwks_uri`, is verified (signature,
  issuer, audience, expiry) before its `fhirUser` is believed; otherwise it is ignored.

Vendor notes: some servers send `expires_in` as a string and `token_type` as "bearer";
both are accepted. A missing `expires_in` is taken as 5 minutes, so the app refreshes early
rather than using a token the server already dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.fhir.ids import is_fhir_id
from service.smart.errors import AuthorizationDenied, EhrUnavailable

__all__ = [
    "SmartConfiguration",
    "TokenResponse",
    "authorize_url",
    "code_challenge",
    "discover",
    "exchange_code",
    "new_state",
    "new_verifier",
    "refresh",
    "verify_id_token",
]

log = logging.getLogger(__name__)
DEFAULT_EXPIRES_IN_S = 300
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    jwks_uri: str | None = None
    capabilities: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    patient: str | None = None
    id_token: str | None = None
    need_patient_banner: bool = True


def new_state() -> str:
    return secrets.token_urlsafe(32)


def new_verifier() -> str:
    """A PKCE code_verifier: 86 characters from the unreserved set (RFC 7636 4.1: 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(verifier)) without padding (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _absolute_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("https", "http") and parts.netloc else None


async def _get_json(http: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise EhrUnavailable(f"Could not reach {what} at {url} ({type(exc).__name__}).") from exc
    if response.status_code != 200:
        raise EhrUnavailable(f"{what} at {url} answered HTTP {response.status_code}.")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EhrUnavailable(f"{what} at {url} did not answer with JSON.") from exc
    if not isinstance(body, dict):
        raise EhrUnavailable(f"{what} at {url} did not answer with a JSON object.")
    return body


async def discover(http: httpx.AsyncClient, iss: str) -> SmartConfiguration:
    """Read `{iss}/.well-known/smart-configuration`; refuse a server that lacks the endpoints
    or says it cannot do S256 (a SMART 2.x server must list `code_challenge_methods_supported`;
    where a 1.x server omits it we send S256 anyway and let it refuse)."""
    url = f"{iss.rstrip('/')}/.well-known/smart-configuration"
    body = await _get_json(http, url, "The EHR's SMART configuration")
    authorize = _absolute_url(body.get("authorization_endpoint"))
    token = _absolute_url(body.get("token_endpoint"))
    if authorize is None or token is None:
        raise EhrUnavailable(
            f"The SMART configuration at {url} names no authorization and token endpoints."
        )
    methods = body.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise EhrUnavailable(
            f"The EHR at {iss} does not support PKCE with S256, which cohort-match requires."
        )
    capabilities = body.get("capabilities")
    return SmartConfiguration(
        authorization_endpoint=authorize,
        token_endpoint=token,
        issuer=body.get("issuer") if isinstance(body.get("issuer"), str) else None,
        jwks_uri=_absolute_url(body.get("jwks_uri")),
        capabilities=frozenset(c for c in capabilities or () if isinstance(c, str)),
    )


def authorize_url(
    config: SmartConfiguration,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    aud: str,
    challenge: str,
    launch: str | None,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,  # the FHIR server the token is for: the EHR must check it is its own
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if launch is not None:
        params["launch"] = launch
    separator = "&" if urlsplit(config.authorization_endpoint).query else "?"
    return f"{config.authorization_endpoint}{separator}{urlencode(params)}"


def _client_auth(
    form: dict[str, str], client_id: str, client_secret: str | None
) -> httpx.BasicAuth | None:
    if client_secret is None:
        form["client_id"] = client_id
        return None
    return httpx.BasicAuth(client_id, client_secret)


async def _token_request(
    http: httpx.AsyncClient, token_endpoint: str, form: dict[str, str], auth: httpx.BasicAuth | None
) -> TokenResponse:
    try:
        if auth is None:
            response = await http.post(
                token_endpoint, data=form, headers={"Accept": "application/json"}
            )
        else:
            response = await http.post(
                token_endpoint, data=form, auth=auth, headers={"Accept": "application/json"}
            )
    except httpx.HTTPError as exc:
        raise EhrUnavailable(
            f"Could not reach the EHR's token endpoint ({type(exc).__name__})."
        ) from exc
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise EhrUnavailable(f"The EHR's token endpoint answered HTTP {response.status_code}.")
    if response.status_code != 200 or "error" in body:
        error = str(body.get("error") or response.status_code)
        detail = body.get("error_description")
        if response.status_code >= 500:
            raise EhrUnavailable(f"The EHR's token endpoint failed ({error}).")
        raise AuthorizationDenied(
            f"The EHR refused to issue a token ({error}{': ' + str(detail) if detail else ''})."
        )
    return _token_response(body)


def _token_response(body: dict[str, Any]) -> TokenResponse:
    access = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(access, str) or not access:
        raise EhrUnavailable("The EHR's token response holds no access_token.")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise EhrUnavailable(f"The EHR issued a {token_type!r} token; only Bearer is supported.")
    raw = body.get("expires_in")
    try:
        expires_in = DEFAULT_EXPIRES_IN_S if raw is None else max(0, int(raw))
    except (TypeError, ValueError):
        expires_in = DEFAULT_EXPIRES_IN_S
    patient = body.get("patient")
    if patient is not None and patient != "" and not is_fhir_id(patient):
        # The launch context names the patient every page then reads: never a URL trick.
        raise AuthorizationDenied("The EHR's launch context names a patient that is not a FHIR id.")
    refresh_token = body.get("refresh_token")
    id_token = body.get("id_token")
    return TokenResponse(
        access_token=access,
        expires_in=expires_in,
        scope=str(body.get("scope") or ""),
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        patient=str(patient) if isinstance(patient, str) and patient else None,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
        need_patient_banner=body.get("need_patient_banner") is not False,
    )


async def exchange_code(
    http: httpx.AsyncClient,
    token_endpoint: str,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    client_id: str,
    client_secret: str | None,
) -> TokenResponse:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    auth = _client_auth(form, client_id, client_secret)
    return await _token_request(http, token_endpoint, form, auth)


async def refresh(
    http: httpx.AsyncClient,
    token_endpoint: str,
    *,
    refresh_token: str,
    client_id: str,
    client_secret: str | None,
) -> TokenResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    auth = _client_auth(form, client_id, client_secret)
    return await _token_request(http, token_endpoint, form, auth)


async def verify_id_token(
    http: httpx.AsyncClient, id_token: str, *, jwks_uri: str, issuer: str, client_id: str
) -> dict[str, Any]:
    """The id_token's claims after checking signature (a key from `jwks_uri`), `iss`, `aud`
    and `exp` (OpenID Connect Core 3.1.3.7). Raises AuthorizationDenied when any check fails."""
    keys = KeySet.import_key_set(await _get_json(http, jwks_uri, "The EHR's signing keys"))  # type: ignore[arg-type]
    try:
        decoded = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
            sub={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise AuthorizationDenied(
            f"The EHR's identity token could not be verified ({type(exc).__name__})."
        ) from exc
    claims: dict[str, Any] = decoded.claims
    return claims
