"""The worklist on the pages, pure: the forms' CSRF token, where a form may return to, and
the cohort rows split into new candidates and patients held by an open decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.web.worklist import csrf_ok, csrf_token, safe_back, split
from service.worklist.model import Decision, DecisionState, Screened

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
