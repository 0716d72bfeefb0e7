"""The worklist in headless Chromium, against the real FHIR server: a coordinator records a
decision from the cohort page (keyboard only) and another from the patient page; after a second
sweep the first is still held, and the screen-failed patient, whose record changed in their
favour, is back among the new candidates; the recruitment report downloaded from the cohort
page counts both decisions and the second sweep.

The FHIR server is this module's own (the test changes data); the app and the EHR in front of
it are the browser fixtures' (tests/browser/conftest.py), built on it. Screenshot:
artifacts/worklist.png; the report: artifacts/recruitment-report.csv.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.test_pages import TRIAL, _sign_in
from tests.integration.conftest import running_server
from tests.smart.conftest import AS_OF

pytestmark = [pytest.mark.browser, pytest.mark.integration]
COHORT = f"/app/cohort?trial={TRIAL}&as_of={AS_OF}"
SCREENING = 120_000  # ms: a page that screens through the FHIR server on a loaded machine


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[str]:
    """Overrides the session's server for this module: the test changes p01's hemoglobin."""
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


def _hemoglobin(fhir_server: str, value: float) -> None:
    with httpx.Client(base_url=fhir_server + "/", timeout=30) as fhir:
        observation = fhir.get("Observation/p01-o18").json()
        observation["valueQuantity"]["value"] = value
        assert fhir.put("Observation/p01-o18", json=observation).status_code == 200


def _sweep(app_url: str) -> int:
    """A full sweep of the configured FHIR server through the API, waited for."""
    started = httpx.post(
        f"{app_url}/sweeps", json={"trial": TRIAL, "as_of": AS_OF, "full": True}, timeout=60
    )
    assert started.status_code == 202, started.text
    run = started.json()["id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = httpx.get(f"{app_url}/sweeps/{run}", timeout=30).json()["status"]
        if status not in ("queued", "running"):
            assert status == "completed", status
            return int(run)
        time.sleep(1)
    raise AssertionError(f"sweep {run} did not complete in 10 minutes")


def _row(page: Any, patient: str) -> Any:
    return page.locator(f"tr[data-patient='Patient/{patient}']")


def _open_cohort(page: Any, app_url: str, sweep: int) -> None:
    page.goto(f"{app_url}{COHORT}", wait_until="commit", timeout=SCREENING)
    page.get_by_role("heading", name="Ranked candidates").wait_for(timeout=SCREENING)
    assert page.locator(".source").get_attribute("data-sweep") == str(sweep)


def test_decisions_survive_a_sweep_and_a_changed_patient_comes_back(
    page: Any, app_url: str, fhir_server: str, artifacts: Path
) -> None:
    _hemoglobin(fhir_server, 50.0)  # p01 fails I6.hgb in the first sweep
    first = _sweep(app_url)

    page.goto(f"{app_url}{COHORT}", wait_until="commit", timeout=SCREENING)
    page.get_by_role("link", name=re.compile(r"^Sign in with localhost")).click()
    _sign_in(page)
    page.wait_for_url(re.compile(r"/app/cohort"), wait_until="commit", timeout=SCREENING)
    page.get_by_role("heading", name="Ranked candidates").wait_for(timeout=SCREENING)
    assert page.locator(".source").get_attribute("data-sweep") == str(first)
    assert page.locator("tr[data-decision]").count() == 0

    # From the cohort page, by keyboard: p02 declined.
    p02 = _row(page, "p02")
    p02.locator("summary").focus()
    page.keyboard.press("Enter")  # opens the row's form
    decision = p02.get_by_label("Decision", exact=True)
    decision.focus()
    decision.select_option("declined")
    p02.get_by_label("Note").focus()
    page.keyboard.type("Not interested in a CAR-T trial")
    p02.get_by_role("button", name="Record decision").focus()
    page.keyboard.press("Enter")  # submits; the page comes back (POST-redirect-GET)
    page.locator("tr[data-patient='Patient/p02'][data-decision='declined']").wait_for(
        timeout=SCREENING
    )
    assert "Declined" in _row(page, "p02").locator(".current-decision").inner_text()

    # From the patient page: p01 screen-failed on I6.hgb.
    _row(page, "p01").get_by_role("link", name="Patient/p01").click()
    page.wait_for_url(re.compile(r"/app/patient\?id=p01"), wait_until="commit")
    decisions = page.locator("section.decisions")
    decisions.wait_for(timeout=SCREENING)
    assert "No decision recorded yet." in decisions.inner_text()
    decisions.get_by_label("Decision", exact=True).select_option("screen_failed")
    decisions.get_by_label(re.compile("^Criterion failed")).select_option("I6.hgb")
    decisions.get_by_label("Note").fill("Hb 50 g/L")
    decisions.get_by_role("button", name="Record decision").click()
    page.locator("section.decisions tr[data-decision='screen_failed']").wait_for(timeout=SCREENING)
    assert "Hb 50 g/L" in page.locator("section.decisions table").inner_text()

    # The record changes in p01's favour; a second sweep.
    _hemoglobin(fhir_server, 118.0)
    second = _sweep(app_url)
    _open_cohort(page, app_url, second)
    assert _row(page, "p02").get_attribute("data-decision") == "declined"  # still held
    p01 = _row(page, "p01")
    assert p01.get_attribute("data-decision") is None  # back among the new candidates
    assert "was screen-failed" in p01.locator(".returned").inner_text()
    held = page.locator("tr[data-decision]").evaluate_all(
        "rows => rows.map(r => r.dataset.patient)"
    )
    assert held == ["Patient/p02"]
    page.screenshot(path=str(artifacts / "worklist.png"), full_page=True)

    diff = httpx.get(f"{app_url}/sweeps/{second}/diff", timeout=60).json()
    assert [(c["patient"], c["decision"]) for c in diff["new"]] == [
        ("Patient/p01", "screen_failed")
    ]

    # The recruitment report, downloaded from the cohort page: the second sweep's counts and
    # the two decisions, each under its latest state.
    with page.expect_download(timeout=SCREENING) as download:
        page.get_by_role("link", name="Download the report (CSV)").click()
    saved = artifacts / "recruitment-report.csv"
    download.value.save_as(str(saved))
    assert download.value.suggested_filename.startswith(f"{TRIAL}-report-")
    with saved.open(encoding="utf-8") as handle:
        counts = {(r["measure"], r["criterion"]): int(r["count"]) for r in csv.DictReader(handle)}
    engine = httpx.get(f"{app_url}/sweeps/{second}", timeout=30).json()["counts"]
    assert counts[("screened", "")] == engine["patients"]
    assert counts[("candidates", "")] == engine["likely_eligible"] + engine["possibly_eligible"]
    assert counts[("reviewed", "")] == 2
    assert (counts[("declined", "")], counts[("screen_failed", "")]) == (1, 1)
    assert counts[("screen_failed", "I6.hgb")] == 1
    assert sum(counts[(s, "")] for s in ("to_review", "contacted", "consented", "enrolled")) == 0
    # The page's own table says the same.
    table = page.locator("table.recruitment").inner_text()
    assert re.search(r"Declined\s+1", table)
