"""The worklist on the pages: decision forms, their CSRF token, and the cohort rows split into
new candidates and patients with an open decision. Pure: decisions and rows are passed in.

- `csrf_token(session_id)`: the token every decision form carries, bound to the page session
  (an HMAC keyed by the session id, which never leaves the HttpOnly cookie and the server):
  a page of another site can neither read it nor compute it. `csrf_ok` checks it in constant
  time. With the session cookie SameSite=Lax the browser would not send the session on a
  cross-site POST anyway; the token is the second lock, and the one the tests can see.
- `split(rows, histories, day)`: each row of the ranked table with its `decision` (the open
  one, service/worklist/model.open_decision) or its `returned` decision (one that gave way:
  `returns_as_new` against the screen the row shows), and the rows in two lists, the new
  candidates and those held by a decision, each in rank order.
- `form_context(...)`: what the form macro (templates/_decision_form.html) needs.
- `subject_view(...)`: the patient's ResearchSubject as the patient page states it: the
  status the EHR has (written by cohort-match or read back), and a failed or switched-off
  write-back of the latest decision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from service.criteria.model import TrialDefinition
from service.worklist.model import (
    STATES,
    Decision,
    Screened,
    current,
    open_decision,
    returns_as_new,
)
from service.worklist.subjects import SubjectState

__all__ = [
    "DECISION_LABEL",
    "csrf_ok",
    "csrf_token",
    "decision_view",
    "form_context",
    "history_view",
    "safe_back",
    "split",
    "subject_view",
]

DECISION_LABEL = {
    "to_review": "To review",
    "contacted": "Contacted",
    "consented": "Consented",
    "declined": "Declined",
    "screen_failed": "Screen-failed",
    "enrolled": "Enrolled",
    "not_now": "Not now",
}
_CSRF_CONTEXT = b"cohort-match decision form"


def csrf_token(session_id: str) -> str:
    """The decision forms' token for this page session."""
    return hmac.new(session_id.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_ok(session_id: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(session_id), str(token))


def safe_back(back: str | None, default: str) -> str:
    """Where the form returns to: a path of the pages (`/app/...`) on this site, else
    `default` (no open redirect through a crafted form)."""
    if not back:
        return default
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or not back.startswith("/app/") or "\\" in back:
        return default
    return back


def decision_view(decision: Decision) -> dict[str, Any]:
    """One decision as the pages show it."""
    return {
        "state": decision.state,
        "label": DECISION_LABEL[decision.state],
        "by": decision.subject,
        "at": f"{decision.at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "note": decision.note,
        "criterion": decision.criterion,
        "until": decision.until.isoformat() if decision.until else None,
    }


def history_view(history: Sequence[Decision]) -> list[dict[str, Any]]:
    """A patient's decisions for a trial, newest first (the log a coordinator reads)."""
    return [decision_view(d) for d in reversed(history)]


def split(
    rows: Sequence[dict[str, Any]],
    histories: Mapping[str, Sequence[Decision]],
    day: dt.date,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(new candidates, patients held by an open decision), each row with `decision` (the
    open one, else None) and `returned` (the decision the patient came back from, else None).

    A row's screen is its status and verdicts: the sweep's stored result, or the screen on
    demand. A declined or screen-failed patient is back among the new when that screen is
    better for them than the one the decision was made on (`returns_as_new`); a not-now
    patient on and after the date."""
    fresh: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for line in rows:
        history = histories.get(line["reference"], ())
        latest = current(history)
        holding = open_decision(history, day)
        screen = Screened(line["status"], line.get("verdicts", {}))
        if holding is not None and returns_as_new(holding, holding.basis, screen, day):
            holding = None
        returned = latest if latest is not None and holding is None else None
        line = {
            **line,
            "decision": decision_view(holding) if holding else None,
            "returned": decision_view(returned) if returned else None,
        }
        (held if holding is not None else fresh).append(line)
    return fresh, held


def form_context(
    trial: TrialDefinition, session_id: str, back: str, today: dt.date
) -> dict[str, Any]:
    """The parts of a decision form that are the same on every row of a page."""
    return {
        "action": "/app/decisions",
        "csrf": csrf_token(session_id),
        "back": back,
        "trial": trial.id,
        "states": [(s, DECISION_LABEL[s]) for s in STATES],
        "criteria": [(c.id, c.text) for c in trial.criteria],
        "min_until": (today + dt.timedelta(days=1)).isoformat(),
    }


_SOURCE = {
    "sweep": "written by a sweep",
    "decision": "written from a decision",
    "ehr": "read back from the EHR",
}


def subject_view(subject: SubjectState | None, resource: str) -> dict[str, Any] | None:
    """What the page says of the patient's ResearchSubject (`resource`), None when
    cohort-match has neither written nor read one."""
    if subject is None:
        return None
    status = None
    if subject.status is not None:
        when = f", {subject.status_at:%Y-%m-%d %H:%M} UTC" if subject.status_at else ""
        status = f"{subject.status} ({_SOURCE.get(subject.source or '', 'known')}{when})"
    message = None
    if subject.outcome == "failed":
        message = (
            f"Writing the latest decision to the EHR failed ({subject.detail or 'no answer'}). "
            "The decision is kept; the next sweep writes it."
        )
    elif subject.outcome == "off":
        message = "Write-back to the EHR is off: the latest decision is kept here only."
    return {"resource": resource, "status": status, "outcome": subject.outcome, "message": message}
