"""A test EHR: a SMART App Launch 2.x authorization server in front of a FHIR server.

Run with uvicorn on 127.0.0.1 in a background thread (tests/smart/server.py). It serves

- `/fhir/.well-known/smart-configuration`: its own authorize, token and JWKS endpoints;
- `/fhir/*`: a minimal reverse proxy to the FHIR server behind it (the real sekmet-fhir by
  URL, or an in-process handler such as tests/api/conftest.FakeFhir). Every request needs
  an access token this EHR issued and that has not expired. So the app's `iss` is this
  proxy: sekmet serves its own .well-known for its own (backend) auth, and an EHR in front
  of a FHIR server is what real deployments look like too.
- `/authorize`: EHR launch (`launch` bound to a patient by `new_launch`) or standalone
  (`launch/patient`: the patient is chosen on the consent form). `interactive=False` approves
  at once; `interactive=True` shows a login form, then a consent form, for a browser to fill.
  The code is bound to client_id, redirect_uri, the PKCE challenge (S256 only), scope,
  patient and user.
- `/token`: authorization_code (code used once: a replay is refused and revokes the tokens
  the code gave; redirect_uri and code_verifier checked) and refresh_token (rotated); the
  response carries patient, scope, expires_in, refresh_token (with online_access or
  offline_access) and an RS256 id_token (with openid).
- `/ehr/chart?patient=&app=[&embed=1]`: an EHR chart page with a link that launches the app
  (or the app in an iframe).

What the EHR saw is kept in `log` (method and path of every request) and `token_requests`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.smart.server import serve

Handler = Callable[[httpx.Request], httpx.Response]
USERNAME = "dr.lee"
PASSWORD = "correct horse"  # noqa: S105 - the test EHR's only user
USER = "Practitioner/dr-lee"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    patient: str | None
    user: str
    expires_at: float
    used: bool = False
    issued: list[str] = field(default_factory=list)


@dataclass
class Token:
    client_id: str
    scope: str
    patient: str | None
    user: str
    expires_at: float
    used: bool = False  # refresh tokens only: each is good once


@dataclass
class Pending:
    """An authorization request between the login and the consent form."""

    params: dict[str, str]
    patient: str | None
    logged_in: bool = False


@lru_cache(maxsize=1)
def _signing_key() -> RSAKey:
    """The EHR's id_token key: generated once per test run (2048-bit RSA takes a while)."""
    return RSAKey.generate_key(2048, parameters={"kid": "ehr-1", "alg": "RS256"})


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font:16px system-ui;margin:2rem;max-width:64rem}label{display:block;"
        "margin:.5rem 0 .2rem}input{font:inherit;padding:.3rem}button{font:inherit;"
        "margin:.8rem .5rem 0 0;padding:.3rem 1rem}.ehr{background:#eef;padding:.5rem}"
        f"iframe{{width:100%;height:80vh;border:1px solid #888}}</style></head><body>{body}"
        "</body></html>",
        status_code=status,
    )


class TestEhr:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        upstream: str | Handler,
        *,
        client_id: str = "cohort-match",
        client_secret: str | None = None,
        interactive: bool = False,
        access_ttl_s: int = 300,
        default_patient: str = "p02",
        redirect_uris: set[str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.client_id = client_id
        self.client_secret = client_secret
        self.interactive = interactive
        self.access_ttl_s = access_ttl_s
        self.default_patient = default_patient
        self.redirect_uris = redirect_uris
        self.base_url = ""
        self.log: list[str] = []
        self.token_requests: list[dict[str, str]] = []
        self.launches: dict[str, str] = {}
        self.codes: dict[str, Grant] = {}
        self.access: dict[str, Token] = {}
        self.refresh: dict[str, Token] = {}
        self.pending: dict[str, Pending] = {}
        self.key = _signing_key()
        self.app = self._build()

    @property
    def iss(self) -> str:
        return f"{self.base_url}/fhir"

    def new_launch(self, patient: str) -> str:
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = patient
        return launch

    @contextmanager
    def running(self, host_name: str = "127.0.0.1") -> Iterator[TestEhr]:
        with serve(self.app, host_name) as url:
            self.base_url = url
            yield self

    def fhir_requests(self) -> list[str]:
        return [line for line in self.log if " /fhir/" in line and "/.well-known/" not in line]

    # ------------------------------------------------------------------ the app
    def _build(self) -> ASGIApp:
        http: dict[str, httpx.AsyncClient] = {}

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            http["client"] = httpx.AsyncClient(timeout=30)
            try:
                yield
            finally:
                await http["client"].aclose()

        app = FastAPI(lifespan=lifespan)

        @app.get("/fhir/.well-known/smart-configuration")
        async def configuration() -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.iss,
                    "jwks_uri": f"{self.base_url}/jwks",
                    "authorization_endpoint": f"{self.base_url}/authorize",
                    "token_endpoint": f"{self.base_url}/token",
                    "grant_types_supported": ["authorization_code", "refresh_token"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "none",
                    ],
                    "scopes_supported": [
                        "openid",
                        "fhirUser",
                        "launch",
                        "launch/patient",
                        "patient/*.rs",
                        "user/*.rs",
                        "online_access",
                        "offline_access",
                    ],
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "capabilities": [
                        "launch-ehr",
                        "launch-standalone",
                        "client-public",
                        "client-confidential-symmetric",
                        "context-ehr-patient",
                        "context-standalone-patient",
                        "sso-openid-connect",
                        "permission-v2",
                        "permission-patient",
                        "permission-user",
                        "permission-online",
                    ],
                }
            )

        @app.get("/jwks")
        async def jwks() -> JSONResponse:
            return JSONResponse(KeySet([self.key]).as_dict(private=False))

        @app.get("/authorize")
        async def authorize(request: Request) -> Response:
            params = dict(request.query_params)
            redirect_uri = params.get("redirect_uri", "")
            if params.get("client_id") != self.client_id or not redirect_uri:
                return _page("Error", "<p>Unknown client or no redirect_uri.</p>", 400)
            if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
                return _page("Error", "<p>redirect_uri is not registered.</p>", 400)

            def refuse(error: str, description: str) -> Response:
                query = {"error": error, "error_description": description}
                if "state" in params:
                    query["state"] = params["state"]
                return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", 302)

            if params.get("response_type") != "code":
                return refuse("unsupported_response_type", "only code")
            if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
                return refuse("invalid_request", "PKCE with S256 is required")
            if params.get("aud", "").rstrip("/") != self.iss:
                return refuse("invalid_request", "aud is not this FHIR server")
            scopes = params.get("scope", "").split()
            patient: str | None = None
            if "launch" in scopes:
                patient = self.launches.get(params.get("launch", ""))
                if patient is None:
                    return refuse("invalid_request", "unknown launch")
            elif "launch/patient" in scopes:
                patient = self.default_patient
            if not self.interactive:
                return self._issue_code(params, patient)
            txn = secrets.token_urlsafe(12)
            self.pending[txn] = Pending(params, patient)
            return _page(
                "EHR sign-in",
                "<h1>Test EHR sign-in</h1>"
                f"<p>{html.escape(params['client_id'])} wants to connect.</p>"
                '<form method="post" action="/authorize/login">'
                f'<input type="hidden" name="txn" value="{txn}">'
                '<label for="username">Username</label>'
                '<input id="username" name="username" autocomplete="username">'
                '<label for="password">Password</label>'
                '<input id="password" name="password" type="password">'
                '<button type="submit">Sign in</button></form>',
            )

        @app.post("/authorize/login")
        async def login(request: Request) -> Response:
            form = _form(await request.body())
            pending = self.pending.get(form.get("txn", ""))
            if pending is None:
                return _page("Error", "<p>Unknown sign-in.</p>", 400)
            if form.get("username") != USERNAME or form.get("password") != PASSWORD:
                return _page("EHR sign-in", "<p>Wrong username or password.</p>", 401)
            pending.logged_in = True
            scope = pending.params.get("scope", "")
            choose = "launch/patient" in scope.split()
            patient_field = (
                '<label for="patient">Patient</label>'
                f'<input id="patient" name="patient" value="{pending.patient or ""}">'
                if choose
                else f"<p>Patient: {html.escape(pending.patient or 'none')}</p>"
            )
            return _page(
                "Allow access",
                "<h1>Allow cohort-match?</h1>"
                f"<p>It asks for: <code>{html.escape(scope)}</code></p>"
                '<form method="post" action="/authorize/consent">'
                f'<input type="hidden" name="txn" value="{form["txn"]}">{patient_field}'
                '<button type="submit" name="decision" value="allow">Allow</button>'
                '<button type="submit" name="decision" value="deny">Deny</button></form>',
            )

        @app.post("/authorize/consent")
        async def consent(request: Request) -> Response:
            form = _form(await request.body())
            pending = self.pending.pop(form.get("txn", ""), None)
            if pending is None or not pending.logged_in:
                return _page("Error", "<p>Unknown sign-in.</p>", 400)
            params = pending.params
            if form.get("decision") != "allow":
                query = {"error": "access_denied", "state": params.get("state", "")}
                return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", 302)
            patient = form.get("patient") or pending.patient
            return self._issue_code(params, patient)

        @app.post("/token")
        async def token(request: Request) -> Response:
            form = _form(await request.body())
            self.token_requests.append(form)
            client = self._client(request, form)
            if client is None:
                return JSONResponse({"error": "invalid_client"}, 401)
            if form.get("grant_type") == "authorization_code":
                return self._code_grant(form)
            if form.get("grant_type") == "refresh_token":
                return self._refresh_grant(form)
            return JSONResponse({"error": "unsupported_grant_type"}, 400)

        @app.get("/ehr/chart")
        async def chart(patient: str, app: str, embed: int = 0) -> HTMLResponse:
            launch = self.new_launch(patient)
            href = f"{app}/launch?{urlencode({'iss': self.iss, 'launch': launch})}"
            frame = (
                f'<iframe title="cohort-match" src="{html.escape(href)}"></iframe>'
                if embed
                else f'<p><a id="open-app" href="{html.escape(href)}">Open cohort-match</a></p>'
            )
            return _page(
                "EHR chart",
                f'<div class="ehr"><h1>Test EHR: chart of Patient/{html.escape(patient)}</h1>'
                f"</div>{frame}",
            )

        @app.get("/fhir/{path:path}")
        async def fhir(path: str, request: Request) -> Response:
            header = request.headers.get("authorization", "")
            grant = self.access.get(header.removeprefix("Bearer ").strip())
            if grant is None or grant.expires_at <= time.time():
                return JSONResponse(
                    {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "login"}],
                    },
                    401,
                )
            forwarded = {
                k: v for k, v in request.headers.items() if k.lower() in ("accept", "prefer")
            }
            if callable(self.upstream):
                upstream_request = httpx.Request(
                    "GET",
                    f"http://fhir.test/fhir/{path}",
                    params=list(request.query_params.multi_items()),
                    headers=forwarded,
                )
                answer = self.upstream(upstream_request)
                content = answer.content
            else:
                answer = await _forward(
                    http["client"],
                    f"{self.upstream}/{path}",
                    list(request.query_params.multi_items()),
                    forwarded,
                )
                # Links (Bundle.link[next]) name the server behind the proxy: rewrite them.
                content = answer.content.replace(self.upstream.encode(), self.iss.encode())
            return Response(
                content,
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type", "application/fhir+json"),
            )

        async def logged(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.log.append(f"{scope['method']} {scope['path']}")
            await app(scope, receive, send)

        return logged

    # ------------------------------------------------------------------ grants
    def _issue_code(self, params: dict[str, str], patient: str | None) -> Response:
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            challenge=params["code_challenge"],
            scope=params.get("scope", ""),
            patient=patient,
            user=USER,
            expires_at=time.time() + 60,
        )
        query = {"code": code, "state": params.get("state", "")}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", 302)

    def _client(self, request: Request, form: dict[str, str]) -> str | None:
        if self.client_secret is None:
            return form.get("client_id") if form.get("client_id") == self.client_id else None
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
        ok = client_id == self.client_id and secrets.compare_digest(secret, self.client_secret)
        return client_id if ok else None

    def _code_grant(self, form: dict[str, str]) -> JSONResponse:
        grant = self.codes.get(form.get("code", ""))
        if grant is None or grant.expires_at <= time.time():
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "unknown code"}, 400
            )
        if grant.used:
            # RFC 6749 4.1.2: a code used twice revokes what it gave.
            for access in grant.issued:
                self.access.pop(access, None)
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "code already used"}, 400
            )
        grant.used = True
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400
            )
        verifier = form.get("code_verifier")
        if not verifier or _s256(verifier) != grant.challenge:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400
            )
        body = self._tokens(Token(grant.client_id, grant.scope, grant.patient, grant.user, 0))
        grant.issued.append(str(body["access_token"]))
        return JSONResponse(body)

    def _refresh_grant(self, form: dict[str, str]) -> JSONResponse:
        old = self.refresh.get(form.get("refresh_token", ""))
        if old is None or old.used:
            return JSONResponse({"error": "invalid_grant"}, 400)
        old.used = True
        return JSONResponse(self._tokens(old))

    def _tokens(self, grant: Token) -> dict[str, Any]:
        scopes = grant.scope.split()
        access = secrets.token_urlsafe(24)
        self.access[access] = Token(
            grant.client_id,
            grant.scope,
            grant.patient,
            grant.user,
            time.time() + self.access_ttl_s,
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl_s,
            "scope": grant.scope,
            "need_patient_banner": True,
        }
        if grant.patient:
            body["patient"] = grant.patient
        if {"online_access", "offline_access"} & set(scopes):
            refresh = secrets.token_urlsafe(24)
            self.refresh[refresh] = Token(
                grant.client_id, grant.scope, grant.patient, grant.user, time.time() + 86400
            )
            body["refresh_token"] = refresh
        if "openid" in scopes:
            now = int(time.time())
            body["id_token"] = jwt.encode(
                {"alg": "RS256", "kid": "ehr-1"},
                {
                    "iss": self.iss,
                    "sub": "dr-lee",
                    "aud": grant.client_id,
                    "iat": now,
                    "exp": now + 300,
                    "fhirUser": f"{self.iss}/{grant.user}",
                },
                self.key,
            )
        return body


async def _forward(
    client: httpx.AsyncClient, url: str, params: list[tuple[str, str]], headers: dict[str, str]
) -> httpx.Response:
    """GET upstream as a gateway does: a pooled connection the upstream closed is retried once
    (a GET is idempotent), and an upstream that still fails is a 502, never an exception that
    the proxy's framework turns into a 500."""
    for attempt in (1, 2):
        try:
            return await client.get(url, params=params, headers=headers)
        except httpx.TransportError:
            if attempt == 2:
                return httpx.Response(502, json={"resourceType": "OperationOutcome"})
    raise AssertionError("unreachable")
