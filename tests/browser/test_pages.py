"""The pages in headless Chromium: an EHR launch through login and consent (top level and in
an EHR iframe), and the coordinator page with its CSV, against the real FHIR server.

Screenshots go to artifacts/ (gitignored): patient-page.png, patient-page-tablet.png,
ehr-iframe.png, signin-page.png, cohort-page.png, score-tables.png; and the downloaded cohort.csv.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.smart.conftest import AS_OF
from tests.smart.ehr import PASSWORD, USERNAME, TestEhr

pytestmark = [pytest.mark.browser, pytest.mark.integration]
TRIAL = "NCT06946485"


def _sign_in(where: Any) -> None:
    """The test EHR's login and consent forms, as a person fills them."""
    where.get_by_label("Username").fill(USERNAME)
    where.get_by_label("Password").fill(PASSWORD)
    where.get_by_role("button", name="Sign in").click()
    where.get_by_role("button", name="Allow").click()


def _api_verdicts(app_url: str, patient: str) -> dict[str, str]:
    result = httpx.post(f"{app_url}/trials/{TRIAL}/match", json={"patient": patient}, timeout=60)
    assert result.status_code == 200, result.text
    return {c["id"]: c["verdict"] for c in result.json()["criteria"]}


def _page_verdicts(where: Any) -> dict[str, str]:
    pairs = where.locator("article[data-criterion]").evaluate_all(
        "els => els.map(e => [e.dataset.criterion, e.dataset.verdict])"
    )
    return dict(pairs)


def test_ehr_launch_through_login_and_consent(
    page: Any, ehr: TestEhr, app_url: str, artifacts: Path
) -> None:
    page.goto(f"{ehr.base_url}/ehr/chart?patient=p02&app={app_url}")
    page.get_by_role("link", name="Open cohort-match").click()
    _sign_in(page)
    page.wait_for_url(re.compile(r"/app/patient"))
    assert page.get_by_role("heading", level=1).inner_text() == f"{TRIAL} checklist"
    assert page.get_by_role("heading", name="Inclusion criteria").is_visible()
    assert page.get_by_role("heading", name="Exclusion criteria").is_visible()
    assert page.get_by_role("heading", name="What to check next").is_visible()
    verdicts = _page_verdicts(page)
    assert verdicts == _api_verdicts(app_url, "p02")
    assert "Likely eligible" in page.locator("#overall").inner_text()
    # evidence: as recorded, converted, and a link to the source record on the EHR
    hemoglobin = page.locator("article[data-criterion='I6.hgb']")
    assert "g/dL" in hemoglobin.inner_text()
    assert "g/L" in hemoglobin.inner_text()
    link = hemoglobin.get_by_role("link").first
    assert link.get_attribute("href").startswith(f"{ehr.iss}/Observation/")
    page.screenshot(path=str(artifacts / "patient-page.png"), full_page=True)
    page.set_viewport_size({"width": 820, "height": 1180})
    page.screenshot(path=str(artifacts / "patient-page-tablet.png"))
    # keyboard: the first Tab stop is the skip link, and it shows when focused
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert skip.is_visible()
    assert skip.bounding_box()["x"] >= 0


def test_computed_scores_are_tables_named_by_their_caption(
    page: Any, ehr: TestEhr, app_url: str, artifacts: Path
) -> None:
    """p70's SLEDAI-2K is computed from labs, with haematuria withheld for an infection: the
    table is found by its caption, and its rows by their item header."""
    page.goto(f"{ehr.base_url}/ehr/chart?patient=p70&app={app_url}")
    page.get_by_role("link", name="Open cohort-match").click()
    _sign_in(page)
    page.wait_for_url(re.compile(r"/app/patient"))
    # The demo's dates are anchored at AS_OF; the page would otherwise screen as of today.
    page.goto(f"{app_url}/app/patient?as_of={AS_OF}")
    assert f"no SLEDAI-2K total score result in the 90 days before {AS_OF}" in page.content()
    activity = page.locator("article[data-criterion='I2']")
    table = activity.get_by_role("table", name=re.compile(r"^SLEDAI-2K computed from the record"))
    assert table.is_visible()
    hematuria = table.get_by_role("row", name=re.compile(r"^Hematuria"))
    assert "Withheld: another cause" in hematuria.inner_text()
    link = hematuria.get_by_role("link").first
    assert link.get_attribute("href") == f"{ehr.iss}/Observation/p70-o35"
    assert page.locator("article[data-criterion='I1'] table.score").count() == 1
    activity.scroll_into_view_if_needed()
    activity.screenshot(path=str(artifacts / "score-tables.png"))


def test_ehr_launch_inside_an_ehr_iframe(
    page: Any, ehr: TestEhr, app_url: str, artifacts: Path
) -> None:
    """The EHR (localhost) frames the app (127.0.0.1): another site. The browser refuses the
    SameSite=Lax session cookie there; the one-time ticket still opens the checklist."""
    page.goto(f"{ehr.base_url}/ehr/chart?patient=p05&app={app_url}&embed=1")
    frame = page.frame_locator("iframe[title='cohort-match']")
    _sign_in(frame)
    frame.get_by_role("heading", name=f"{TRIAL} checklist").wait_for()
    assert _page_verdicts(frame) == _api_verdicts(app_url, "p05")
    stored = [c["name"] for c in page.context.cookies(app_url)]
    assert "cohort_match_session" not in stored  # the caveat the ticket works around
    page.screenshot(path=str(artifacts / "ehr-iframe.png"), full_page=True)


def test_coordinator_page_and_csv(page: Any, ehr: TestEhr, app_url: str, artifacts: Path) -> None:
    api = httpx.post(
        f"{app_url}/trials/{TRIAL}/candidates", json={"as_of": AS_OF}, timeout=120
    ).json()
    expected = [c["patient"]["reference"] for c in api["candidates"]]
    page.goto(f"{app_url}/app/cohort?trial={TRIAL}&as_of={AS_OF}")
    assert page.get_by_role("heading", name="Sign in", exact=True).is_visible()
    page.screenshot(path=str(artifacts / "signin-page.png"))
    page.get_by_role("link", name=re.compile(r"^Sign in with localhost")).click()
    _sign_in(page)
    # The cohort page streams while it screens the whole demo population against the FHIR
    # server: the document's load event comes only when the last patient is done, so wait for
    # the navigation to commit, then give the screening the same budget as the API call above.
    page.wait_for_url(re.compile(r"/app/cohort"), wait_until="commit")
    page.get_by_role("heading", name="Ranked candidates").wait_for(timeout=120_000)
    shown = page.locator("tr[data-patient]").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert shown == expected
    assert not page.locator(".progress").is_visible()  # the progress line is gone when done
    assert page.get_by_role("heading", name="Attrition, in protocol order").is_visible()
    page.screenshot(path=str(artifacts / "cohort-page.png"), full_page=True)

    with page.expect_download(timeout=120_000) as download:  # the CSV screens the cohort again
        page.get_by_role("link", name="Download CSV").click()
    saved = artifacts / "cohort.csv"
    download.value.save_as(str(saved))
    with saved.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient"] for r in rows] == expected
    assert [r["status"] for r in rows] == [c["status"] for c in api["candidates"]]

    # and into one candidate's checklist with the same session
    page.locator("tr[data-patient='Patient/p05'] a").click()
    page.wait_for_url(re.compile(r"/app/patient\?id=p05"))
    assert "Ineligible" in page.locator("#overall").inner_text()
