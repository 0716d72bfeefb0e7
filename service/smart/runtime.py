"""The SMART launch flow and page sessions, held for the application's lifetime.

    /launch   -> SmartRuntime.begin():    allowlist, discovery, state + PKCE, authorize URL
    /callback -> SmartRuntime.complete(): state taken once, code exchanged, session created
    pages     -> SmartRuntime.session():  the session, its access token refreshed if near expiry

The allowlist is checked before anything is sent anywhere: an `iss` that is not configured
is refused without a single request to it (a launch link can name any URL; following it
would let anyone point the app at a server of their choosing).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from service.config import Settings
from service.fhir import FhirClient
from service.fhir_clients import FhirClients
from service.smart import oauth
from service.smart.errors import (
    AuthorizationDenied,
    EhrUnavailable,
    LaunchRefused,
    StateInvalid,
)
from service.smart.store import PendingLaunch, SessionStore, SmartSession

__all__ = ["Completed", "SmartRuntime", "safe_target", "user_level"]

log = logging.getLogger(__name__)
# Refresh this long before the access token expires, so a page never fails half way.
REFRESH_MARGIN_S = 60
TICKET_TTL_S = 120
PATIENT_PAGE = "/app/patient"
COHORT_PAGE = "/app/cohort"


def safe_target(target: str | None) -> str:
    """Where to go after the callback: a local path under /app/ only (no open redirect)."""
    if not target:
        return PATIENT_PAGE
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not parts.path.startswith("/app/")
        or "//" in target
        or "\\" in target
    ):
        raise LaunchRefused("The page to open after sign-in must be one of cohort-match's pages.")
    return target


def user_level(session: SmartSession) -> bool:
    """Whether the session was granted user- or system-level FHIR scopes (a practitioner's
    standalone launch), as the coordinator page needs; a patient launch has `patient/` only."""
    return any(s.startswith(("user/", "system/")) for s in session.scopes())


@dataclass(frozen=True)
class Completed:
    session: SmartSession
    ticket: str
    target: str


class SmartRuntime:
    """Built once with the app state (service/app_state.py): the launches and sessions of
    `store`, EHR FHIR clients from `fhir`, and one HTTP client for discovery and tokens."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        fhir: FhirClients,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.issuers = settings.smart_issuers
        for iss in self.issuers:
            if urlsplit(iss).scheme not in ("https", "http") or not urlsplit(iss).netloc:
                raise ValueError(f"COHORT_MATCH_SMART_ISSUERS: not an absolute URL: {iss!r}")
        self.clock = clock
        self.store = store
        self.fhir_clients = fhir
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fhir_timeout_s), follow_redirects=False
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def client_secret(self) -> str | None:
        secret = self.settings.smart_client_secret
        return secret.get_secret_value() if secret is not None else None

    def allowed(self, iss: str | None) -> str | None:
        """The configured form of `iss` if it is on the allowlist (a trailing slash aside)."""
        if not iss:
            return None
        wanted = iss.strip().rstrip("/")
        return wanted if wanted in self.issuers else None

    def frame_ancestors(self) -> list[str]:
        """Origins allowed to frame the pages: the EHRs on the allowlist."""
        origins = []
        for iss in self.issuers:
            parts = urlsplit(iss)
            origins.append(f"{parts.scheme}://{parts.netloc}")
        return sorted(set(origins))

    def fhir(self, iss: str) -> FhirClient:
        """One pooled client per EHR FHIR server; the session's token is passed per call."""
        return self.fhir_clients.ehr(iss)

    def scope_for(self, target: str, *, ehr_launch: bool) -> str:
        if target.startswith(COHORT_PAGE):
            base = self.settings.smart_cohort_scope
            extra = "launch" if ehr_launch else ""
        else:
            base = self.settings.smart_patient_scope
            extra = "launch" if ehr_launch else "launch/patient"
        scopes = [extra, *base.split()] if extra else base.split()
        return " ".join(dict.fromkeys(scopes))

    # ------------------------------------------------------------------ the flow
    async def begin(
        self, *, iss: str | None, launch: str | None, target: str | None, redirect_uri: str
    ) -> str:
        """Record a pending launch and return the EHR's authorize URL to redirect to."""
        allowed = self.allowed(iss)
        if allowed is None:
            raise LaunchRefused(
                "cohort-match is not set up to connect to this EHR"
                + (f" ({iss})" if iss else " (the launch named no FHIR server)")
                + ". Ask your administrator to add it to COHORT_MATCH_SMART_ISSUERS."
            )
        page = safe_target(target)
        config = await oauth.discover(self.http, allowed)
        state = oauth.new_state()
        verifier = oauth.new_verifier()
        scope = self.scope_for(page, ehr_launch=launch is not None)
        self.store.save_launch(
            PendingLaunch(
                state=state,
                iss=allowed,
                launch=launch,
                target=page,
                redirect_uri=redirect_uri,
                token_endpoint=config.token_endpoint,
                issuer=config.issuer,
                jwks_uri=config.jwks_uri,
                verifier=verifier,
                scope=scope,
            ),
            self.settings.smart_launch_ttl_s,
        )
        return oauth.authorize_url(
            config,
            client_id=self.settings.smart_client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            aud=allowed,
            challenge=oauth.code_challenge(verifier),
            launch=launch,
        )

    async def complete(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> Completed:
        """Check `state`, exchange the code with the PKCE verifier, open a session."""
        pending = self.store.take_launch(state) if state else None
        if pending is None:
            raise StateInvalid(
                "This sign-in has expired or was already used. Open cohort-match again from "
                "the EHR."
            )
        if error:
            raise AuthorizationDenied(
                f"The EHR did not authorize cohort-match ({error}"
                + (f": {error_description}" if error_description else "")
                + ")."
            )
        if not code:
            raise AuthorizationDenied("The EHR sent no authorization code.")
        tokens = await oauth.exchange_code(
            self.http,
            pending.token_endpoint,
            code=code,
            verifier=pending.verifier,
            redirect_uri=pending.redirect_uri,
            client_id=self.settings.smart_client_id,
            client_secret=self.client_secret,
        )
        user = await self._user(pending, tokens)
        session = self.store.create_session(
            iss=pending.iss,
            token_endpoint=pending.token_endpoint,
            scope=tokens.scope or pending.scope,
            patient=tokens.patient,
            user=user,
            need_patient_banner=tokens.need_patient_banner,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            access_expires_at=self.clock() + tokens.expires_in,
            ttl_s=self.settings.smart_session_ttl_s,
        )
        ticket = self.store.issue_ticket(session.id, TICKET_TTL_S)
        log.info("SMART session opened for %s at %s", user, pending.iss)
        return Completed(session, ticket, pending.target)

    async def _user(self, pending: PendingLaunch, tokens: oauth.TokenResponse) -> str:
        """Who signed in, for the audit trail: `fhirUser` (else `sub`) of a verified id_token."""
        if tokens.id_token and pending.jwks_uri and pending.issuer:
            claims = await oauth.verify_id_token(
                self.http,
                tokens.id_token,
                jwks_uri=pending.jwks_uri,
                issuer=pending.issuer,
                client_id=self.settings.smart_client_id,
            )
            return str(claims.get("fhirUser") or claims["sub"])
        return f"unidentified user of {pending.iss}"

    # ------------------------------------------------------------------ sessions
    async def session(self, session_id: str | None) -> SmartSession | None:
        """The live session, with an access token good for at least REFRESH_MARGIN_S more
        seconds (refreshed when needed); None when there is none or it has ended."""
        if not session_id:
            return None
        current = self.store.get(session_id)
        if current is None or self._fresh(current):
            return current
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        async with lock:
            # Another request of this process may have refreshed while we waited: a refresh
            # token is used once only (SMART best practices; OAuth 2.1 6.1).
            current = self.store.get(session_id)
            if current is None or self._fresh(current):
                return current
            return await self._refresh(current)

    def _fresh(self, session: SmartSession) -> bool:
        return session.access_expires_at - self.clock() > REFRESH_MARGIN_S

    async def _refresh(self, session: SmartSession) -> SmartSession | None:
        still_valid = session.access_expires_at > self.clock()
        if session.refresh_token is None:
            return session if still_valid else self._end(session)
        try:
            tokens = await oauth.refresh(
                self.http,
                session.token_endpoint,
                refresh_token=session.refresh_token,
                client_id=self.settings.smart_client_id,
                client_secret=self.client_secret,
            )
        except (AuthorizationDenied, EhrUnavailable) as exc:
            log.warning("SMART refresh failed for a session at %s: %s", session.iss, exc.message)
            return session if still_valid else self._end(session)
        self.store.update_tokens(
            session.id,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token or session.refresh_token,
            access_expires_at=self.clock() + tokens.expires_in,
            scope=tokens.scope or session.scope,
        )
        return self.store.get(session.id)

    def _end(self, session: SmartSession) -> SmartSession | None:
        """The session is over (expired and not refreshable): forget it; None."""
        self.store.delete(session.id)
        return None

    def redeem(self, ticket: str | None) -> str | None:
        return self.store.redeem_ticket(ticket) if ticket else None

    def sign_out(self, session_id: str | None) -> None:
        if session_id:
            self.store.delete(session_id)
