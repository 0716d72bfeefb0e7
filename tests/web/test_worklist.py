"""The worklist on the pages, pure: the forms' CSRF token, where a form may return to, the
cohort rows split into new candidates and patients held by an open decision, and the line
the patient page says of the patient's ResearchSubject."""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.web.worklist import csrf_ok, csrf_token, safe_back, split, subject_view
from service.worklist.model import Decision, DecisionState, Screened
from service.worklist.subjects import SubjectState

TODAY = dt.date(2026, 11, 20)
NANJING = dt.timezone(dt.timedelta(hours=8))


def _row(patient: str, status: str = "likely_eligible", **verdicts: str) -> dict[str, Any]:
    return {"reference": patient, "status": status, "verdicts": verdicts, "rank": 1}


def _decision(
    patient: str, state: DecisionState, basis: Screened | None = None, **fields: Any
) -> Decision:
    at = dt.datetime(2026, 11, 10, 9, tzinfo=NANJING)
    return Decision("T", patient, state, "coordinator-7", at, basis=basis, **fields)


def test_the_token_is_bound_to_the_session() -> None:
    token = csrf_token("session-a")
    assert csrf_ok("session-a", token)
    assert not csrf_ok("session-b", token)
    assert not csrf_ok("session-a", None)
    assert not csrf_ok("session-a", "")
    assert csrf_token("session-a") == token  # stable for the session: every form carries it
    assert "session-a" not in token


def test_a_form_returns_only_to_a_page_of_the_app() -> None:
    assert safe_back("/app/cohort?trial=T&as_of=2026-11-20", "/d") == (
        "/app/cohort?trial=T&as_of=2026-11-20"
    )
    for back in (None, "", "https://evil.test/app/", "//evil.test/app/", "/app\\..", "/sweeps"):
        assert safe_back(back, "/d") == "/d"


def test_rows_split_by_their_open_decision() -> None:
    failed_hgb = Screened("ineligible", {"I6.hgb": "fail"})
    rows = [
        _row("Patient/a"),
        _row("Patient/b"),
        _row("Patient/c", **{"I6.hgb": "pass"}),
        _row("Patient/d", "ineligible", **{"I6.hgb": "fail"}),
        _row("Patient/e"),
        _row("Patient/f"),
    ]
    histories = {
        "Patient/b": [_decision("Patient/b", "contacted")],
        # screen-failed on I6.hgb, which passes now: back among the new
        "Patient/c": [_decision("Patient/c", "screen_failed", failed_hgb, criterion="I6.hgb")],
        # the same decision, the record unchanged: still held
        "Patient/d": [_decision("Patient/d", "screen_failed", failed_hgb, criterion="I6.hgb")],
        "Patient/e": [_decision("Patient/e", "not_now", until=TODAY)],  # its date has come
        "Patient/f": [_decision("Patient/f", "not_now", until=TODAY + dt.timedelta(days=1))],
    }
    fresh, held = split(rows, histories, TODAY)
    assert [r["reference"] for r in fresh] == ["Patient/a", "Patient/c", "Patient/e"]
    assert [r["reference"] for r in held] == ["Patient/b", "Patient/d", "Patient/f"]
    assert [r["decision"]["state"] for r in held] == ["contacted", "screen_failed", "not_now"]
    assert held[2]["decision"]["until"] == "2026-11-21"
    assert [r["returned"] and r["returned"]["state"] for r in fresh] == [
        None,
        "screen_failed",
        "not_now",
    ]
    assert all(r["decision"] is None for r in fresh)


def test_a_declined_decision_without_a_basis_stands() -> None:
    rows = [_row("Patient/a", **{"I6.hgb": "pass"})]
    fresh, held = split(rows, {"Patient/a": [_decision("Patient/a", "declined")]}, TODAY)
    assert fresh == []
    assert held[0]["decision"]["label"] == "Declined"


def _known(**fields: Any) -> SubjectState:
    values: dict[str, Any] = {
        "trial_id": "T",
        "patient": "Patient/a",
        "status": None,
        "source": None,
        "status_at": None,
        "decision_id": 1,
        "outcome": None,
        "detail": None,
        "outcome_at": None,
    }
    values.update(fields)
    return SubjectState(**values)


def test_the_research_subject_line_says_what_the_ehr_has_and_what_failed() -> None:
    assert subject_view(None, "ResearchSubject/x") is None
    written = subject_view(
        _known(
            status="on-study",
            source="decision",
            status_at=dt.datetime(2026, 11, 27, 13, 30, tzinfo=dt.UTC),
            outcome="written",
        ),
        "ResearchSubject/x",
    )
    assert written is not None
    assert written["status"] == "on-study (written from a decision, 2026-11-27 13:30 UTC)"
    assert written["message"] is None
    failed = subject_view(
        _known(status="candidate", source="sweep", outcome="failed", detail="503"), "R/x"
    )
    assert failed is not None
    assert failed["status"] == "candidate (written by a sweep)"
    assert failed["message"].startswith("Writing the latest decision to the EHR failed (503).")
    off = subject_view(_known(outcome="off"), "R/x")
    assert off is not None
    assert (off["status"], off["outcome"]) == (None, "off")
    assert "Write-back to the EHR is off" in off["message"]
