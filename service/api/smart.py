"""SMART App Launch 2.x: `/launch` (EHR and standalone), `/callback`, sign-out, page sessions.

EHR launch: the EHR opens `/launch?iss=...&launch=...`; standalone: `/launch?iss=...` (the
EHR then asks the user for a patient, scope `launch/patient`). `next=/app/cohort?...` asks
for user-level scopes instead, for the coordinator page. `iss` must be on the allowlist
(COHORT_MATCH_SMART_ISSUERS); anything else is refused before a request is sent to it.

State and PKCE verifier live server-side (service/smart/store.py), keyed by `state`, which
travels through the EHR in the URL. After the code exchange the tokens stay server-side; the
browser gets a session id in a cookie: HttpOnly, SameSite=Lax, Secure unless the page was
requested on a loopback host (local demo over plain http).

Inside an EHR iframe (the EHR on another site than cohort-match) browsers refuse that
cookie: SameSite=Lax cookies are neither stored nor sent in a cross-site frame, and third-party
cookies are being phased out altogether. The flow copes because nothing in it needs a
cookie: /callback redirects to the page with a one-time `ticket` (random, 2 minutes, deleted
when used) that the page exchanges for the session, rendering at once and setting the cookie
for browsers that keep it. What does not survive in a cookie-less frame is a reload or a
second page of the app: the page then asks to launch again from the EHR. A top-level window
(a standalone launch, or an EHR that opens apps in a new tab) keeps the cookie and is not
affected. The ticket is in the URL only once and `Referrer-Policy: no-referrer` keeps it
from leaking to the EHR through source links.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from service.api.deps import Audit, RequestId, audited
from service.api.state import State
from service.config import is_loopback
from service.smart import SmartError, SmartRuntime, SmartSession
from service.web import render
from service.web.responses import html

__all__ = [
    "COOKIE",
    "Smart",
    "page_session",
    "router",
    "set_session_cookie",
    "signin_page",
]

COOKIE = "cohort_match_session"


router = APIRouter(tags=["smart"], include_in_schema=False)


def _runtime(state: State) -> SmartRuntime:
    return state.smart


Smart = Annotated[SmartRuntime, Depends(_runtime)]


def _redirect_uri(request: Request, smart: SmartRuntime) -> str:
    configured = smart.settings.smart_redirect_uri
    return configured or str(request.url_for("smart_callback"))


def _secure(request: Request) -> bool:
    return not is_loopback(request.url.hostname or "")


def set_session_cookie(response: Response, request: Request, smart: SmartRuntime, sid: str) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        max_age=smart.settings.smart_session_ttl_s,
        path="/",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )


async def page_session(
    request: Request, smart: SmartRuntime, ticket: str | None
) -> tuple[SmartSession | None, bool]:
    """The caller's session (refreshed if its token is near expiry) and whether it came from
    a ticket (then the response sets the cookie). A used or stale ticket falls back to the
    cookie, so reloading the first page in a normal window keeps working."""
    redeemed = smart.redeem(ticket)
    if redeemed is not None:
        return await smart.session(redeemed), True
    return await smart.session(request.cookies.get(COOKIE)), False


def _launch_link(iss: str, target: str) -> str:
    return "/launch?" + urlencode({"iss": iss, "next": target})


def signin_page(
    smart: SmartRuntime, target: str, message: str, *, title: str = "Sign in", status: int = 401
) -> Response:
    """A plain page with one launch link per configured EHR (standalone launch)."""
    issuers = [
        {"text": urlsplit(iss).netloc or iss, "href": _launch_link(iss, target)}
        for iss in smart.issuers
    ]
    body = render(
        "message.html",
        title=title,
        message=message,
        tone="info",
        issuers=issuers,
        user=None,
        nav_query="",
        request_id=None,
    )
    return html(body, smart.frame_ancestors(), status)


def error_page(
    smart: SmartRuntime, title: str, message: str, status: int, request_id: str
) -> Response:
    body = render(
        "message.html",
        title=title,
        message=message,
        tone="error",
        user=None,
        nav_query="",
        request_id=request_id,
    )
    return html(body, smart.frame_ancestors(), status)


@router.get("/launch", name="smart_launch")
async def launch(
    request: Request,
    smart: Smart,
    request_id: RequestId,
    iss: str | None = None,
    launch: str | None = None,
    target: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    """EHR launch (`iss` and `launch`) or standalone launch (`iss` only)."""
    try:
        url = await smart.begin(
            iss=iss, launch=launch, target=target, redirect_uri=_redirect_uri(request, smart)
        )
    except SmartError as exc:
        return error_page(smart, "cohort-match cannot start", exc.message, exc.status, request_id)
    return RedirectResponse(url, status_code=302)


@router.get("/callback", name="smart_callback", dependencies=[audited("smart.callback")])
async def callback(
    request: Request,
    smart: Smart,
    audit: Audit,
    request_id: RequestId,
    code: str | None = None,
    oauth_state: Annotated[str | None, Query(alias="state")] = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    """The EHR's redirect after authorization: check state, exchange the code, open a session
    and continue to the page with a one-time ticket (see the module docstring)."""
    audit.client_id = smart.settings.smart_client_id
    try:
        done = await smart.complete(
            state=oauth_state, code=code, error=error, error_description=error_description
        )
    except SmartError as exc:
        audit.outcome = f"refused {exc.status}"
        return error_page(smart, "Sign-in did not complete", exc.message, exc.status, request_id)
    session = done.session
    audit.subject = session.user
    audit.patients = [f"Patient/{session.patient}"] if session.patient else []
    audit.outcome = "session opened"
    separator = "&" if "?" in done.target else "?"
    response = RedirectResponse(
        f"{done.target}{separator}{urlencode({'ticket': done.ticket})}", status_code=303
    )
    set_session_cookie(response, request, smart, session.id)
    return response


@router.post("/app/signout")
async def signout(request: Request, smart: Smart) -> Response:
    smart.sign_out(request.cookies.get(COOKIE))
    response = signin_page(
        smart, "/app/patient", "You are signed out.", title="Signed out", status=200
    )
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=_secure(request), samesite="lax")
    return response
