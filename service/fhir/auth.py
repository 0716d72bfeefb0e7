"""How cohort-match authenticates to the FHIR server: `httpx.Auth` flows the client runs.

- `NoAuth`: an open server (the bundled demo).
- `StaticBearer`: a long-lived token issued out of band, or a caller's own token passed per
  request (the EHR calls us with a token for its FHIR server: `FhirClient.get_json(...,
  token=...)`), which overrides the client's credentials for that request.
- `SmartBackendAuth`: SMART Backend Services (client_credentials grant with a
  `private_key_jwt` client assertion signed RS384 or ES384, per the SMART App Launch 2.x
  "Backend Services" spec). The access token is cached until shortly before it expires and
  fetched under a lock, so concurrent requests share one token request. The token request
  goes through the same httpx client (the flow yields it). A 401 answer gets one new token
  and one more try: a 401 means the server did not act on the request, so even a POST is
  safe to send again.
- `HostBound(auth, hosts)`: the client wraps its credentials in it, so a token is only ever
  sent to the FHIR server's own host (and hosts admitted explicitly): a next link, a Bulk
  status or file URL elsewhere never receives it.

The token endpoint failing is a `FhirTemporaryError` (5xx) or `FhirAuthError` (refused).
JOSE is done with joserfc (maintained, typed, implements RFC 7515/7517/7519) rather than by
hand.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.errors import FhirAuthError, FhirTemporaryError

__all__ = ["Auth", "HostBound", "NoAuth", "SmartBackendAuth", "StaticBearer"]

# Refresh this long before the server's expiry so a token never expires mid-request.
EXPIRY_MARGIN_S = 60


class Auth(httpx.Auth):
    """Credentials for a FHIR server: an `httpx.Auth` flow, and `header()` for callers
    outside a client (the value of the Authorization header, or None)."""

    async def header(self, http: httpx.AsyncClient) -> str | None:
        return None


class NoAuth(Auth):
    """No credentials: requests go as they are."""


class StaticBearer(Auth):
    """A bearer token issued out of band (or a caller's own, per request)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticBearer) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)

    def __repr__(self) -> str:
        return "StaticBearer(***)"

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request

    async def header(self, http: httpx.AsyncClient) -> str | None:
        return f"Bearer {self.token}"


class HostBound(httpx.Auth):
    """`auth` for requests to `hosts` (host:port as in a URL); nothing for any other host."""

    def __init__(self, auth: httpx.Auth, hosts: frozenset[str]) -> None:
        self.auth = auth
        self.hosts = hosts

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if urlsplit(str(request.url)).netloc not in self.hosts:
            yield request
            return
        flow = self.auth.async_auth_flow(request)
        try:
            next_request = await flow.__anext__()
            while True:
                response = yield next_request
                try:
                    next_request = await flow.asend(response)
                except StopAsyncIteration:
                    return
        finally:
            await flow.aclose()


class SmartBackendAuth(Auth):
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

    def _stale(self) -> bool:
        return self._token is None or time.monotonic() >= self._expires_at

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(),
        }
        return httpx.Request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._stale():
            async with self._lock:  # concurrent requests wait for one token request
                if self._stale():
                    answer = yield self._token_request()
                    await answer.aread()
                    self._accept(answer)
        used = self._token
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code != 401:
            return
        # Revoked or expired early: one new token and one more try. A 401 means the server
        # did not act on the request, so sending it again is safe whatever its method.
        async with self._lock:
            if self._token == used:  # nobody else has fetched a new one meanwhile
                answer = yield self._token_request()
                await answer.aread()
                self._accept(answer)
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    async def header(self, http: httpx.AsyncClient) -> str | None:
        """The Authorization header, fetching a token with `http` when needed."""
        async with self._lock:
            if self._stale():
                try:
                    answer = await http.send(self._token_request())
                except httpx.TransportError as exc:
                    raise FhirTemporaryError(
                        f"token endpoint unreachable: {exc}", url=self.token_url
                    ) from exc
                self._accept(answer)
            return f"Bearer {self._token}"

    def _accept(self, response: httpx.Response) -> None:
        """Keep the token of the token endpoint's answer; raise for any other answer."""
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
        if not isinstance(body, dict):
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
