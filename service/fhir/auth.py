"""How cohort-match authenticates to the FHIR server.

- `NoAuth`: an open server (the bundled demo).
- `StaticBearer`: a long-lived token issued out of band.
- `SmartBackendAuth`: SMART Backend Services (client_credentials grant with a
  `private_key_jwt` client assertion signed RS384 or ES384, per the SMART App Launch 2.x
  "Backend Services" spec). The access token is cached until shortly before it expires and
  refreshed under a lock, so concurrent fetches share one token request.
- A caller's own bearer token, passed per request (the EHR calls us with a token for its
  FHIR server), overrides all of these: see `FhirClient(..., token=...)`.

JOSE is done with joserfc (maintained, typed, implements RFC 7515/7517/7519) rather than by
hand.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.config import Settings
from service.errors import FhirAuthError, FhirTemporaryError

__all__ = ["Auth", "NoAuth", "SmartBackendAuth", "StaticBearer", "auth_from_settings"]

# Refresh this long before the server's expiry so a token never expires mid-request.
EXPIRY_MARGIN_S = 60


class Auth(Protocol):
    async def header(self, http: httpx.AsyncClient) -> str | None:
        """The Authorization header value, or None."""
        ...


class NoAuth:
    async def header(self, http: httpx.AsyncClient) -> str | None:
        return None


@dataclass(frozen=True)
class StaticBearer:
    token: str

    async def header(self, http: httpx.AsyncClient) -> str | None:
        return f"Bearer {self.token}"


class SmartBackendAuth:
    """client_credentials with a signed JWT client assertion; token cached until near expiry."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: bytes,
        *,
        key_id: str | None = None,
        algorithm: str = "RS384",
        scope: str = "system/*.rs",
    ) -> None:
        if algorithm not in ("RS384", "ES384"):
            raise ValueError("SMART Backend Services requires RS384 or ES384")
        key_type = RSAKey if algorithm == "RS384" else ECKey
        self._key = key_type.import_key(private_key_pem)
        self.token_url = token_url
        self.client_id = client_id
        self.key_id = key_id
        self.algorithm = algorithm
        self.scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_file(
        cls, token_url: str, client_id: str, key_path: Path, **kwargs: object
    ) -> SmartBackendAuth:
        return cls(token_url, client_id, key_path.read_bytes(), **kwargs)  # type: ignore[arg-type]

    def assertion(self, now: float | None = None) -> str:
        """The signed client assertion (5-minute lifetime, unique jti)."""
        issued = int(now if now is not None else time.time())
        header = {"alg": self.algorithm, "typ": "JWT"}
        if self.key_id:
            header["kid"] = self.key_id
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": issued + 300,
            "iat": issued,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(header, claims, self._key, algorithms=[self.algorithm])

    async def header(self, http: httpx.AsyncClient) -> str | None:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                await self._refresh(http)
            return f"Bearer {self._token}"

    async def _refresh(self, http: httpx.AsyncClient) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(),
        }
        try:
            response = await http.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            raise FhirTemporaryError(
                f"token endpoint unreachable: {exc}", url=self.token_url
            ) from exc
        if response.status_code >= 500:
            raise FhirTemporaryError(
                f"token endpoint answered {response.status_code}",
                url=self.token_url,
                http_status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            error = body.get("error_description") or body.get("error") or response.reason_phrase
            raise FhirAuthError(
                f"token request refused ({response.status_code}): {error}",
                url=self.token_url,
                http_status=response.status_code,
            )
        lifetime = float(body.get("expires_in", 300))
        self._token = str(body["access_token"])
        self._expires_at = time.monotonic() + max(0.0, lifetime - EXPIRY_MARGIN_S)


def auth_from_settings(settings: Settings) -> Auth:
    """The FHIR credentials the settings configure ("passthrough" sends none of its own:
    the caller's token is given per request)."""
    if settings.fhir_auth == "bearer" and settings.fhir_token is not None:
        return StaticBearer(settings.fhir_token.get_secret_value())
    if settings.fhir_auth == "smart-backend":
        assert settings.fhir_token_url and settings.fhir_client_id and settings.fhir_private_key
        return SmartBackendAuth(
            settings.fhir_token_url,
            settings.fhir_client_id,
            settings.fhir_private_key.read_bytes(),
            key_id=settings.fhir_key_id,
            algorithm=settings.fhir_algorithm,
            scope=settings.fhir_scope,
        )
    return NoAuth()
