"""SMART App Launch through the test EHR: the happy paths, and each refusal on its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app_state import state_of
from service.smart.oauth import code_challenge
from service.smart.runtime import TICKET_TTL_S
from tests.api.conftest import FakeFhir
from tests.smart.conftest import APP, AS_OF, MovingClock, file_verdicts, launch
from tests.smart.ehr import TestEhr

COOKIE = "cohort_match_session"
SECRET = "s3cret-for-tests"  # noqa: S105 - the test EHR's registered client secret


def _verdicts(page: str) -> dict[str, str]:
    """criterion id -> verdict, from the data attributes of the checklist."""
    found = {}
    for chunk in page.split('data-criterion="')[1:]:
        ident, rest = chunk.split('"', 1)
        found[ident] = rest.split('data-verdict="', 1)[1].split('"', 1)[0]
    return found


def _audit(app: TestClient, action: str) -> list[tuple[str, str, str]]:
    engine = create_engine(state_of(app.app).settings.database_url)
    with engine.connect() as db:
        rows = db.execute(
            text("SELECT subject, patients, outcome FROM audit_events WHERE action = :a"),
            {"a": action},
        ).all()
    engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


# ---------------------------------------------------------------------- happy paths
def test_ehr_launch_opens_the_patients_checklist(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, patient="p02")
    params = flow.authorize_params()
    assert params["launch"] in ehr.launches
    assert set(params["scope"].split()) >= {"launch", "openid", "fhirUser", "patient/*.rs"}
    assert "launch/patient" not in params["scope"].split()
    assert params["aud"] == ehr.iss
    assert params["code_challenge_method"] == "S256"
    assert flow.page is not None
    assert flow.page.status_code == 200
    page = flow.page.text
    assert "Patient/p02" in page
    assert "Inclusion criteria" in page
    assert "Exclusion criteria" in page
    assert 'data-status="likely_eligible"' in page
    assert "What to check next" in page
    # evidence: value as recorded and converted, and a link to the source on the EHR
    assert f'href="{ehr.iss}/Observation/p02-' in page
    assert "g/dL" in page
    assert "g/L" in page
    verdicts = _verdicts(page)
    assert verdicts["I1"] == "pass"
    assert verdicts["I8"] == "unknown"
    assert set(verdicts.values()) <= {"pass", "fail", "unknown", "not_applicable"}
    # every FHIR request carried the session's token (the EHR refuses any other)
    assert ehr.fhir_requests()
    (who, patients, outcome), *_ = _audit(app, "page.patient")
    assert who == f"{ehr.iss}/Practitioner/dr-lee"
    assert json.loads(patients) == ["Patient/p02"]
    assert outcome == "likely_eligible"


def test_the_page_shows_the_same_verdicts_as_the_file_screen(app: TestClient, ehr: TestEhr) -> None:
    launch(app, ehr, patient="p05")
    page = app.get("/app/patient", params={"as_of": AS_OF})
    assert page.status_code == 200
    assert _verdicts(page.text) == file_verdicts()["Patient/p05"]
    assert "58 g/L" in page.text  # p05: hemoglobin 58 g/L, below the 60 g/L limit
    assert 'data-status="ineligible"' in page.text


def test_standalone_launch_asks_for_a_patient(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, patient=None)
    params = flow.authorize_params()
    assert "launch" not in params
    assert "launch/patient" in params["scope"].split()
    assert "launch" not in params["scope"].split()
    assert flow.page is not None
    assert flow.page.status_code == 200
    assert f"Patient/{ehr.default_patient}" in flow.page.text


def test_the_token_request_proves_possession_of_the_verifier(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr)
    (request,) = ehr.token_requests
    assert request["grant_type"] == "authorization_code"
    assert code_challenge(request["code_verifier"]) == flow.authorize_params()["code_challenge"]
    assert request["client_id"] == "cohort-match"  # public client: no secret anywhere
    assert "client_secret" not in request
    assert request["redirect_uri"] == f"{APP}/callback"


def test_confidential_client_authenticates_with_basic(
    make_app: Callable[..., TestClient], ehr: TestEhr
) -> None:
    ehr.client_secret = SECRET
    app = make_app(smart_client_secret=SECRET)
    flow = launch(app, ehr)
    assert flow.page is not None
    assert flow.page.status_code == 200
    assert "client_id" not in ehr.token_requests[0]


def test_wrong_client_secret_is_refused(make_app: Callable[..., TestClient], ehr: TestEhr) -> None:
    ehr.client_secret = SECRET
    app = make_app(smart_client_secret=SECRET[::-1])
    flow = launch(app, ehr, follow=False)
    assert flow.callback.status_code == 400
    assert "invalid_client" in flow.callback.text
    assert COOKIE not in flow.callback.cookies


# ---------------------------------------------------------------------- cookies, tickets
def test_cookie_flags_on_loopback(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, follow=False)
    cookie = flow.callback.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # http://127.0.0.1: the local demo


def test_cookie_is_secure_on_any_other_host(
    make_app: Callable[..., TestClient], ehr: TestEhr
) -> None:
    app = make_app(base_url="https://cohort.hospital.test")
    flow = launch(app, ehr)
    cookie = flow.callback.headers["set-cookie"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert flow.authorize_params()["redirect_uri"] == "https://cohort.hospital.test/callback"
    assert flow.page is not None
    assert flow.page.status_code == 200


def test_configured_redirect_uri_is_used(make_app: Callable[..., TestClient], ehr: TestEhr) -> None:
    app = make_app(smart_redirect_uri="https://cohort.hospital.test/callback")
    started = app.get(
        "/launch", params={"iss": ehr.iss, "launch": ehr.new_launch("p02")}, follow_redirects=False
    )
    query = parse_qs(urlsplit(started.headers["location"]).query)
    assert query["redirect_uri"] == ["https://cohort.hospital.test/callback"]


def test_without_cookies_the_ticket_opens_the_first_page_once(
    app: TestClient, ehr: TestEhr
) -> None:
    """An EHR iframe on another site: the browser drops the SameSite=Lax cookie."""
    flow = launch(app, ehr, follow=False)
    app.cookies.clear()
    first = app.get(flow.callback.headers["location"])
    assert first.status_code == 200
    assert "Patient/p02" in first.text
    app.cookies.clear()
    again = app.get(flow.callback.headers["location"])
    assert again.status_code == 401
    assert "Sign in" in again.text
    assert "ticket" not in again.text  # the sign-in link does not carry the used ticket


def test_with_the_cookie_a_reload_keeps_working(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr)
    assert flow.page is not None
    assert COOKIE in app.cookies
    reload = app.get(flow.callback.headers["location"])  # the ticket is spent; the cookie is not
    assert reload.status_code == 200
    assert "Patient/p02" in reload.text


def test_tickets_expire(app: TestClient, ehr: TestEhr, moving_clock: MovingClock) -> None:
    flow = launch(app, ehr, follow=False)
    moving_clock.advance(TICKET_TTL_S + 1)
    app.cookies.clear()
    assert app.get(flow.callback.headers["location"]).status_code == 401


def test_pages_carry_the_security_headers(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr)
    assert flow.page is not None
    headers = flow.page.headers
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    origin = ehr.base_url
    assert f"frame-ancestors 'self' {origin}" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none'


def test_sign_out_ends_the_session(app: TestClient, ehr: TestEhr) -> None:
    launch(app, ehr)
    out = app.post("/app/signout")
    assert out.status_code == 200
    assert "signed out" in out.text
    app.cookies.clear()
    assert app.get("/app/patient").status_code == 401


# ---------------------------------------------------------------------- refresh
def test_a_token_near_expiry_is_refreshed(app: TestClient, ehr: TestEhr) -> None:
    ehr.access_ttl_s = 30  # inside the app's 60 s margin: every page refreshes first
    flow = launch(app, ehr)
    assert flow.page is not None
    assert flow.page.status_code == 200
    grants = [r["grant_type"] for r in ehr.token_requests]
    assert grants == ["authorization_code", "refresh_token"]
    again = app.get("/app/patient")
    assert again.status_code == 200
    # the rotated refresh token was used, not the first one again (the EHR would refuse it)
    assert [r["grant_type"] for r in ehr.token_requests][-1] == "refresh_token"
    assert len({r.get("refresh_token") for r in ehr.token_requests[1:]}) == 2


def test_an_expired_session_without_refresh_token_asks_to_sign_in_again(
    make_app: Callable[..., TestClient], ehr: TestEhr
) -> None:
    ehr.access_ttl_s = 0
    app = make_app(smart_patient_scope="openid fhirUser patient/*.rs")  # no online_access
    flow = launch(app, ehr)
    assert flow.page is not None
    assert flow.page.status_code == 401
    assert "Sign in" in flow.page.text


def test_a_refused_refresh_ends_the_session(
    app: TestClient, ehr: TestEhr, moving_clock: MovingClock
) -> None:
    flow = launch(app, ehr)
    assert flow.page is not None
    ehr.refresh.clear()  # the EHR revoked it
    moving_clock.advance(3600)
    page = app.get("/app/patient")
    assert page.status_code == 401


# ---------------------------------------------------------------------- refusals
def test_an_iss_not_on_the_allowlist_is_refused_without_a_request_to_it(
    app: TestClient, ehr: TestEhr
) -> None:
    with TestEhr(FakeFhir().handle).running() as rogue:
        response = app.get(
            "/launch", params={"iss": rogue.iss, "launch": "x"}, follow_redirects=False
        )
        assert response.status_code == 400
        assert "not set up to connect" in response.text
        assert rogue.iss in response.text
        assert rogue.log == []
    assert ehr.log == []


def test_an_iss_that_only_starts_like_an_allowed_one_is_refused(
    app: TestClient, ehr: TestEhr
) -> None:
    for iss in (f"{ehr.iss}.evil.test", f"{ehr.iss}/../other", ehr.iss.upper(), ""):
        response = app.get("/launch", params={"iss": iss}, follow_redirects=False)
        assert response.status_code == 400, iss
    assert ehr.log == []


def test_a_launch_without_iss_is_refused(app: TestClient) -> None:
    response = app.get("/launch", follow_redirects=False)
    assert response.status_code == 400
    assert "named no FHIR server" in response.text


def test_next_must_be_a_page_of_the_app(app: TestClient, ehr: TestEhr) -> None:
    for target in ("https://evil.test/app/", "//evil.test/app/x", "/launch", "/app/..\\x"):
        response = app.get(
            "/launch", params={"iss": ehr.iss, "next": target}, follow_redirects=False
        )
        assert response.status_code == 400, target
    assert ehr.log == []


def test_an_unknown_state_is_refused(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, follow=False)
    code = parse_qs(urlsplit(flow.callback_url).query)["code"][0]
    ehr.token_requests.clear()
    response = app.get("/callback", params={"code": code, "state": "forged"})
    assert response.status_code == 400
    assert "expired or was already used" in response.text
    assert ehr.token_requests == []  # nothing was exchanged


def test_a_replayed_callback_is_refused(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, follow=False)
    assert flow.callback.status_code == 303
    again = app.get(flow.callback_url, follow_redirects=False)
    assert again.status_code == 400
    assert "expired or was already used" in again.text
    assert len(ehr.token_requests) == 1


def test_a_state_expires(app: TestClient, ehr: TestEhr, moving_clock: MovingClock) -> None:
    started = app.get(
        "/launch", params={"iss": ehr.iss, "launch": ehr.new_launch("p02")}, follow_redirects=False
    )
    callback_url = httpx.get(started.headers["location"]).headers["location"]
    moving_clock.advance(601)
    assert app.get(callback_url).status_code == 400


def _authorized(app: TestClient, ehr: TestEhr) -> tuple[str, str]:
    """Start a launch and let the EHR approve it: (code, state), callback not yet called."""
    started = app.get(
        "/launch", params={"iss": ehr.iss, "launch": ehr.new_launch("p02")}, follow_redirects=False
    )
    query = parse_qs(urlsplit(httpx.get(started.headers["location"]).headers["location"]).query)
    return query["code"][0], query["state"][0]


def test_a_replayed_code_is_refused_and_revokes_its_tokens(app: TestClient, ehr: TestEhr) -> None:
    code, state = _authorized(app, ehr)
    _, other_state = _authorized(app, ehr)
    first = app.get("/callback", params={"code": code, "state": state})
    assert first.status_code == 200
    replay = app.get("/callback", params={"code": code, "state": other_state})
    assert replay.status_code == 400
    assert "code already used" in replay.text
    # RFC 6749 4.1.2: the EHR revoked the first session's token; the page says so plainly
    page = app.get("/app/patient")
    assert page.status_code == 403
    assert "refused" in page.text
    assert "Traceback" not in page.text


def test_a_code_with_another_launchs_verifier_is_refused(app: TestClient, ehr: TestEhr) -> None:
    """A code injected into another launch's callback: that launch's PKCE verifier does not
    match the code's challenge."""
    code, _ = _authorized(app, ehr)
    _, other_state = _authorized(app, ehr)
    response = app.get("/callback", params={"code": code, "state": other_state})
    assert response.status_code == 400
    assert "PKCE verification failed" in response.text
    assert COOKIE not in response.cookies


@pytest.mark.parametrize("verifier", [None, "", "a-wrong-verifier-" + "x" * 40])
def test_the_ehr_refuses_a_missing_or_wrong_verifier(ehr: TestEhr, verifier: str | None) -> None:
    """The test EHR itself: a code is worth nothing without its verifier."""
    real = "v" * 64
    authorize = httpx.get(
        f"{ehr.base_url}/authorize",
        params={
            "response_type": "code",
            "client_id": "cohort-match",
            "redirect_uri": "http://127.0.0.1:1/callback",
            "scope": "launch/patient openid fhirUser patient/*.rs",
            "state": "s",
            "aud": ehr.iss,
            "code_challenge": code_challenge(real),
            "code_challenge_method": "S256",
        },
    )
    code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:1/callback",
        "client_id": "cohort-match",
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    refused = httpx.post(f"{ehr.base_url}/token", data=form)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_the_ehr_refuses_plain_pkce(ehr: TestEhr) -> None:
    authorize = httpx.get(
        f"{ehr.base_url}/authorize",
        params={
            "response_type": "code",
            "client_id": "cohort-match",
            "redirect_uri": "http://127.0.0.1:1/callback",
            "scope": "openid",
            "state": "s",
            "aud": ehr.iss,
            "code_challenge": "plain-text",
            "code_challenge_method": "plain",
        },
    )
    assert parse_qs(urlsplit(authorize.headers["location"]).query)["error"] == ["invalid_request"]


def test_the_ehr_saying_no_is_shown_plainly(app: TestClient, ehr: TestEhr) -> None:
    started = app.get(
        "/launch", params={"iss": ehr.iss, "launch": ehr.new_launch("p02")}, follow_redirects=False
    )
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    response = app.get(
        "/callback",
        params={"error": "access_denied", "error_description": "user said no", "state": state},
    )
    assert response.status_code == 400
    assert "did not authorize" in response.text
    assert "user said no" in response.text
    assert ehr.token_requests == []


def test_an_unreachable_ehr_is_a_plain_502(make_app: Callable[..., TestClient]) -> None:
    app = make_app(smart_issuers="http://127.0.0.1:9/fhir")
    response = app.get("/launch", params={"iss": "http://127.0.0.1:9/fhir"})
    assert response.status_code == 502
    assert "Could not reach" in response.text
    assert "Traceback" not in response.text


def test_a_patient_session_cannot_open_another_patient(app: TestClient, ehr: TestEhr) -> None:
    launch(app, ehr, patient="p02")
    response = app.get("/app/patient", params={"id": "p01"})
    assert response.status_code == 403
    assert "opened for Patient/p02" in response.text


def test_no_session_shows_a_sign_in_page_with_launch_links(app: TestClient, ehr: TestEhr) -> None:
    for path in ("/app/patient", "/app/cohort?trial=NCT06946485"):
        response = app.get(path)
        assert response.status_code == 401
        assert "/launch?iss=" in response.text
        assert "text/html" in response.headers["content-type"]


def test_callback_audit_rows(app: TestClient, ehr: TestEhr) -> None:
    launch(app, ehr)
    app.get("/callback", params={"state": "forged", "code": "x"})
    outcomes = sorted(o for _, _, o in _audit(app, "smart.callback"))
    assert outcomes == ["refused 400", "session opened"]


def test_routes_stay_out_of_the_published_contract(app: TestClient) -> None:
    paths = app.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/app", "/launch", "/callback"))]
