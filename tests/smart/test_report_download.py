"""GET /app/report.csv: the recruitment report the cohort page shows, downloaded from the page
session (the same CSV as the API's), under the cohort page's session rules, audited as the
API's report is (counts only, no patient)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi.testclient import TestClient

from service.app_state import state_of
from tests.smart.conftest import AS_OF, launch
from tests.smart.ehr import TestEhr
from tests.smart.test_decision_forms import COHORT, TRIAL, _coordinator, _field, _post


def _audit(app: TestClient) -> list[Any]:
    rows = state_of(app.app).audit.recent()  # type: ignore[arg-type]
    return [r for r in rows if r.action == "page.report"]


def test_the_cohort_page_offers_the_report_as_csv_with_its_counts(
    app: TestClient, ehr: TestEhr
) -> None:
    page = _coordinator(app, ehr)
    token = _field(page, "csrf")
    for patient, state, extra in [
        ("Patient/p01", "contacted", {}),
        ("Patient/p02", "consented", {}),
        ("Patient/p03", "screen_failed", {"criterion": "I6.hgb"}),
        ("Patient/p04", "enrolled", {}),
    ]:
        done = _post(app, csrf=token, trial=TRIAL, patient=patient, state=state, **extra)
        assert done.status_code == 303
    again = app.get(COHORT).text
    found = re.search(r'href="(/app/report\.csv\?[^"]+)" download', again)
    assert found is not None, "no report download on the cohort page"
    link = found.group(1).replace("&amp;", "&")
    today = state_of(app.app).today()  # type: ignore[arg-type]
    start = today - dt.timedelta(days=29)
    assert link == f"/app/report.csv?trial={TRIAL}&from={start}&to={today}"

    answer = app.get(link)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["cache-control"] == "no-store"
    assert (
        f'filename="{TRIAL}-report-{start}-{today}.csv"' in (answer.headers["content-disposition"])
    )
    rows = answer.text.splitlines()
    assert rows[0] == "measure,criterion,count"
    counts = {tuple(row.split(",")[:2]): int(row.split(",")[2]) for row in rows[1:]}
    assert counts[("reviewed", "")] == 4
    assert [counts[(s, "")] for s in ("contacted", "consented", "enrolled", "screen_failed")] == [
        1,
        1,
        1,
        1,
    ]
    assert counts[("screen_failed", "I6.hgb")] == 1
    assert counts[("screened", "")] == 0  # no sweep completed: the page screened on demand
    [row] = _audit(app)
    assert (row.trial_id, row.patients, row.outcome) == (TRIAL, "[]", f"report {start}..{today}")


def test_a_period_can_be_asked_for_and_is_checked(app: TestClient, ehr: TestEhr) -> None:
    _coordinator(app, ehr)
    base = f"/app/report.csv?trial={TRIAL}"
    asked = app.get(f"{base}&from=2026-11-01&to=2026-11-15")
    assert asked.status_code == 200
    assert "-report-2026-11-01-2026-11-15.csv" in asked.headers["content-disposition"]
    assert app.get(f"{base}&from=2026-13-01").status_code == 400
    reversed_period = app.get(f"{base}&from=2026-11-10&to=2026-11-09")
    assert reversed_period.status_code == 422
    assert "before it starts" in reversed_period.text
    assert app.get("/app/report.csv?trial=NCT00000000").status_code == 404
    assert [r.outcome for r in _audit(app)] == [
        "error 404",
        "error 422",
        "error 400",
        "report 2026-11-01..2026-11-15",
    ]


def test_the_report_needs_a_practitioners_session(app: TestClient, ehr: TestEhr) -> None:
    anonymous = app.get(f"/app/report.csv?trial={TRIAL}")
    assert anonymous.status_code == 401
    assert "/launch?iss=" in anonymous.text
    flow = launch(app, ehr, patient="p02", target=f"/app/patient?trial={TRIAL}&as_of={AS_OF}")
    assert flow.page is not None
    assert flow.page.status_code == 200
    one_patient = app.get(f"/app/report.csv?trial={TRIAL}")
    assert one_patient.status_code == 403
    assert "text/csv" not in one_patient.headers["content-type"]
    assert [r.outcome for r in _audit(app)] == ["error 403", "error 401"]
