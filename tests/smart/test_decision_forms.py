"""Decision forms on the pages (POST /app/decisions): recorded with the session's user as who,
audited, back to the page; refused without the session's CSRF token, without a session and
for a patient the session was not opened for, storing nothing then."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from service.app_state import state_of
from service.worklist.research_subject import subject_id
from tests.smart.conftest import AS_OF, launch
from tests.smart.ehr import USER, TestEhr

TRIAL = "NCT06946485"
COHORT = f"/app/cohort?trial={TRIAL}&as_of={AS_OF}"


def _coordinator(app: TestClient, ehr: TestEhr) -> str:
    flow = launch(app, ehr, patient=None, target=COHORT)
    assert flow.page is not None
    assert flow.page.status_code == 200, flow.page.text
    return flow.page.text


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, name
    return html.unescape(found.group(1))


def _stored(app: TestClient, patient: str = "Patient/p01") -> list[Any]:
    return state_of(app.app).decisions.history(TRIAL, patient)  # type: ignore[arg-type]


def _audit(app: TestClient, action: str = "page.decision") -> list[Any]:
    rows = state_of(app.app).audit.recent()  # type: ignore[arg-type]
    return [r for r in rows if r.action == action]


def _post(app: TestClient, **fields: str) -> Any:
    return app.post("/app/decisions", data=fields, follow_redirects=False)


def _row(page: str, patient: str) -> str:
    found = re.search(rf'<tr [^>]*data-patient="{patient}"[^>]*>.*?</tr>', page, re.S)
    assert found is not None, patient
    return found.group(0)


def test_a_decision_from_the_cohort_page_is_kept_and_shown_apart(
    app: TestClient, ehr: TestEhr
) -> None:
    page = _coordinator(app, ehr)
    assert 'id="new-candidates"' in page
    assert "data-decision=" not in page
    back = _field(page, "back")
    assert back.startswith("/app/cohort?")
    assert "ticket" not in back
    answer = _post(
        app,
        csrf=_field(page, "csrf"),
        trial=TRIAL,
        patient="Patient/p01",
        back=back,
        state="screen_failed",
        criterion="I6.hgb",
        until="2027-01-01",  # ignored: only not-now takes a date
        note="Hb 55 g/L on repeat",
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == back
    [decision] = _stored(app)
    assert (decision.state, decision.criterion, decision.until) == ("screen_failed", "I6.hgb", None)
    assert decision.subject == f"{ehr.iss}/{USER}"  # the session's fhirUser
    assert decision.note == "Hb 55 g/L on repeat"
    [row] = _audit(app)
    assert (row.subject, row.trial_id, row.outcome) == (
        decision.subject,
        TRIAL,
        "recorded screen_failed",
    )
    assert json.loads(row.patients) == ["Patient/p01"]
    again = app.get(back).text
    held = _row(again, "Patient/p01")
    assert 'data-decision="screen_failed"' in held
    assert "Screen-failed" in held
    assert "I6.hgb" in held
    assert again.index('id="decided"') < again.index('data-patient="Patient/p01"')


def test_without_the_sessions_token_nothing_is_recorded(app: TestClient, ehr: TestEhr) -> None:
    page = _coordinator(app, ehr)
    fields = {"trial": TRIAL, "patient": "Patient/p01", "state": "contacted"}
    for token in (None, "", "0" * 64, _field(page, "csrf")[:-1] + "x"):
        answer = _post(app, **fields, **({} if token is None else {"csrf": token}))
        assert answer.status_code == 403
        assert "text/html" in answer.headers["content-type"]
        assert "nothing was recorded" in answer.text
    assert _stored(app) == []
    assert [r.outcome for r in _audit(app)] == ["error 403"] * 4


def test_another_sessions_token_is_refused(make_app: Any, ehr: TestEhr, app: TestClient) -> None:
    other = make_app()
    token = _field(_coordinator(other, ehr), "csrf")
    _coordinator(app, ehr)
    answer = _post(app, csrf=token, trial=TRIAL, patient="Patient/p01", state="contacted")
    assert answer.status_code == 403
    assert _stored(app) == []


def test_without_a_session_the_form_asks_to_sign_in(app: TestClient, ehr: TestEhr) -> None:
    answer = _post(app, csrf="x", trial=TRIAL, patient="Patient/p01", state="contacted")
    assert answer.status_code == 401
    assert "/launch?iss=" in answer.text
    assert _stored(app) == []


def test_a_patient_session_records_only_for_its_patient(app: TestClient, ehr: TestEhr) -> None:
    flow = launch(app, ehr, patient="p02", target=f"/app/patient?trial={TRIAL}&as_of={AS_OF}")
    assert flow.page is not None
    assert flow.page.status_code == 200, flow.page.text
    page = flow.page.text
    assert "No decision recorded yet." in page
    token = _field(page, "csrf")
    refused = _post(app, csrf=token, trial=TRIAL, patient="Patient/p01", state="contacted")
    assert refused.status_code == 403
    assert "opened for Patient/p02" in refused.text
    assert _stored(app) == []
    assert _audit(app)[0].outcome == "error 403"
    done = _post(
        app,
        csrf=token,
        trial=TRIAL,
        patient="Patient/p02",
        state="not_now",
        until="2027-01-15",
        back=_field(page, "back"),
    )
    assert done.status_code == 303
    assert [(d.state, str(d.until)) for d in _stored(app, "Patient/p02")] == [
        ("not_now", "2027-01-15")
    ]
    history = app.get(done.headers["location"]).text
    assert 'data-decision="not_now"' in history
    assert "until 2027-01-15" in history


def test_an_incomplete_decision_is_explained_and_not_recorded(
    app: TestClient, ehr: TestEhr
) -> None:
    token = _field(_coordinator(app, ehr), "csrf")
    base = {"csrf": token, "trial": TRIAL, "patient": "Patient/p01"}
    failed = _post(app, **base, state="screen_failed")
    assert failed.status_code == 422
    assert "needs the criterion" in failed.text
    unknown = _post(app, **base, state="screen_failed", criterion="I99")
    assert unknown.status_code == 422
    assert "not a criterion of" in unknown.text
    past = _post(app, **base, state="not_now", until="2020-01-01")
    assert past.status_code == 422
    assert _stored(app) == []


def test_the_form_returns_only_to_the_pages(app: TestClient, ehr: TestEhr) -> None:
    token = _field(_coordinator(app, ehr), "csrf")
    for back in ("https://elsewhere.test/app/x", "//elsewhere.test/app/", "/sweeps"):
        answer = _post(
            app, csrf=token, trial=TRIAL, patient="Patient/p01", state="to_review", back=back
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/app/cohort?trial={TRIAL}"


# ---------------------------------------------------------------- write-back from the pages
WRITE_TO = "http://fhir.test/fhir"  # the configured FHIR server the ResearchSubjects go to


@pytest.fixture
def fhir_writes() -> Iterator[respx.MockRouter]:
    """respx for the configured FHIR server; the test EHR (127.0.0.1) is reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock


def _subject_line(page: str) -> str:
    found = re.search(r'<p class="write-back"[^>]*>.*?</p>', page, re.S)
    assert found is not None, "no write-back line on the page"
    return found.group(0)


def test_a_decision_from_a_page_is_written_to_the_research_subject(
    make_app: Any, ehr: TestEhr, fhir_writes: respx.MockRouter
) -> None:
    route = fhir_writes.post(WRITE_TO).mock(return_value=httpx.Response(200, json={}))
    app = make_app(fhir_base_url=WRITE_TO, sweep_write_back=True)
    page = _coordinator(app, ehr)
    patient_page = f"/app/patient?id=p01&trial={TRIAL}&as_of={AS_OF}"
    answer = _post(
        app,
        csrf=_field(page, "csrf"),
        trial=TRIAL,
        patient="Patient/p01",
        state="consented",
        back=patient_page,
    )
    assert answer.status_code == 303
    assert route.call_count == 1
    bundle = json.loads(route.calls.last.request.content)
    subject = bundle["entry"][-1]["resource"]
    assert (subject["id"], subject["status"]) == (
        subject_id(TRIAL, "Patient/p01"),
        "pending-on-study",
    )
    assert [d.state for d in _stored(app)] == ["consented"]
    line = _subject_line(app.get(answer.headers["location"]).text)
    assert 'data-write-back="written"' in line
    assert "pending-on-study (written from a decision" in line


def test_a_failed_write_back_from_a_page_keeps_the_decision_and_says_so(
    make_app: Any, ehr: TestEhr, fhir_writes: respx.MockRouter
) -> None:
    route = fhir_writes.post(WRITE_TO).mock(return_value=httpx.Response(500, text="offline"))
    app = make_app(fhir_base_url=WRITE_TO, sweep_write_back=True)
    page = _coordinator(app, ehr)
    patient_page = f"/app/patient?id=p01&trial={TRIAL}&as_of={AS_OF}"
    answer = _post(
        app,
        csrf=_field(page, "csrf"),
        trial=TRIAL,
        patient="Patient/p01",
        state="enrolled",
        back=patient_page,
    )
    assert answer.status_code == 303
    assert route.call_count == 1  # sent once, never retried
    assert [d.state for d in _stored(app)] == ["enrolled"]
    [row] = _audit(app)
    assert row.outcome == "recorded enrolled"
    line = _subject_line(app.get(answer.headers["location"]).text)
    assert 'data-write-back="failed"' in line
    assert "The decision is kept; the next sweep writes it." in line


def test_with_write_back_off_the_page_says_the_decision_stays_here(
    app: TestClient, ehr: TestEhr
) -> None:
    page = _coordinator(app, ehr)
    patient_page = f"/app/patient?id=p01&trial={TRIAL}&as_of={AS_OF}"
    answer = _post(
        app,
        csrf=_field(page, "csrf"),
        trial=TRIAL,
        patient="Patient/p01",
        state="to_review",
        back=patient_page,
    )
    line = _subject_line(app.get(answer.headers["location"]).text)
    assert 'data-write-back="off"' in line
    assert "Write-back to the EHR is off" in line
