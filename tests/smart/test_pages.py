"""The coordinator page and its CSV, and the page errors, through the test EHR."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app_state import state_of
from service.cli import app as cli
from service.config import Settings
from tests.api.conftest import FakeFhir
from tests.conftest import app_for
from tests.smart.conftest import AS_OF, SMALL_PATIENTS, launch
from tests.smart.ehr import TestEhr
from tests.smart.server import serve

COHORT = f"/app/cohort?trial=NCT06946485&as_of={AS_OF}"


@lru_cache(maxsize=2)
def _cli_csv(data: Path) -> str:
    args = ["screen", "--trial", "NCT06946485", "--data", str(data), "--as-of", AS_OF]
    result = CliRunner().invoke(cli, [*args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def cli_csv(small_demo: Path) -> str:
    """`cohort-match screen --format csv` on the same patients the test EHR serves."""
    return _cli_csv(small_demo)


def _ranked(page: str) -> list[str]:
    return re.findall(r'data-patient="([^"]+)"', page)


def _coordinator(app: TestClient, ehr: TestEhr) -> str:
    flow = launch(app, ehr, patient=None, target=COHORT)
    scopes = flow.authorize_params()["scope"].split()
    assert "user/*.rs" in scopes
    assert "launch/patient" not in scopes
    assert flow.page is not None
    assert flow.page.status_code == 200, flow.page.text
    return flow.page.text


def test_the_cohort_page_ranks_every_patient_like_the_cli(
    app: TestClient, ehr: TestEhr, cli_csv: str
) -> None:
    page = _coordinator(app, ehr)
    expected = [line.split(",")[1] for line in cli_csv.splitlines()[1:]]
    assert _ranked(page) == expected
    patients = len(expected)
    assert f"Screening {patients} patients…" in page
    assert f"{patients} screened:" in page
    assert "Attrition, in protocol order" in page
    assert '<a href="/app/patient?id=p' in page
    assert "Download CSV" in page


def test_the_csv_is_the_clis_csv(app: TestClient, ehr: TestEhr, cli_csv: str) -> None:
    _coordinator(app, ehr)
    response = app.get("/app/cohort.csv", params={"trial": "NCT06946485", "as_of": AS_OF})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    assert response.text == cli_csv


def test_the_status_filter(app: TestClient, ehr: TestEhr, cli_csv: str) -> None:
    _coordinator(app, ehr)
    page = app.get(COHORT + "&status=likely_eligible").text
    expected = [
        line.split(",")[1]
        for line in cli_csv.splitlines()[1:]
        if line.split(",")[5] == "likely_eligible"
    ]
    assert expected
    assert _ranked(page) == expected
    assert '<option value="likely_eligible" selected>' in page
    csv = app.get("/app/cohort.csv?trial=NCT06946485&status=likely_eligible&as_of=" + AS_OF)
    assert [line.split(",")[1] for line in csv.text.splitlines()[1:]] == expected
    bad = app.get(COHORT + "&status=maybe")
    assert bad.status_code == 400
    assert "status must be one of" in bad.text


def test_a_coordinator_opens_any_patients_checklist(app: TestClient, ehr: TestEhr) -> None:
    page = _coordinator(app, ehr)
    link = re.search(r'<a href="(/app/patient\?id=p01[^"]*)"', page)
    assert link is not None
    checklist = app.get(link.group(1).replace("&amp;", "&"))
    assert checklist.status_code == 200
    assert "Patient/p01" in checklist.text


def test_a_patient_session_is_sent_to_sign_in_for_the_cohort(app: TestClient, ehr: TestEhr) -> None:
    launch(app, ehr, patient="p02")
    response = app.get(COHORT)
    assert response.status_code == 403
    assert "single patient" in response.text
    assert app.get("/app/cohort.csv?trial=NCT06946485").status_code == 403
    link = re.search(r'href="(/launch\?[^"]+)"', response.text)
    assert link is not None
    query = parse_qs(urlsplit(link.group(1).replace("&amp;", "&")).query)
    assert query["iss"] == [ehr.iss]
    assert query["next"] == [COHORT]


def test_a_failing_fhir_server_is_a_sentence_on_the_page(
    app: TestClient, ehr: TestEhr, fake: FakeFhir
) -> None:
    _coordinator(app, ehr)
    fake.faults["Patient"] = lambda request: httpx.Response(400, json={"nope": True})
    page = app.get(COHORT)
    assert page.status_code == 200  # streamed: the status line went out with the head
    assert "Could not read from" in page.text
    assert "Traceback" not in page.text
    assert "Download CSV" not in page.text
    csv = app.get("/app/cohort.csv?trial=NCT06946485")
    assert csv.status_code == 502
    assert "Could not read from" in csv.text


def _unfaulted(fake: FakeFhir, request: httpx.Request) -> httpx.Response:
    """What the fake answers without its faults (the EHR calls it from one thread)."""
    faults, fake.faults = fake.faults, {}
    try:
        return fake.handle(request)
    finally:
        fake.faults = faults


def test_unreadable_patients_are_listed_not_dropped(
    app: TestClient, ehr: TestEhr, fake: FakeFhir
) -> None:
    _coordinator(app, ehr)

    def broken_p03(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Patient/p03"):
            return httpx.Response(500, text="database on fire")
        return _unfaulted(fake, request)

    fake.faults["Patient"] = broken_p03
    page = app.get(COHORT).text
    assert "Not screened (1)" in page
    assert "Patient/p03" in page.split("Not screened (1)")[1].split("</section>")[0]
    assert "Patient/p03" not in _ranked(page)
    assert len(_ranked(page)) == SMALL_PATIENTS - 1


def test_a_missing_patient_is_a_404_page(app: TestClient, ehr: TestEhr) -> None:
    _coordinator(app, ehr)
    response = app.get("/app/patient", params={"id": "nobody"})
    assert response.status_code == 404
    assert "was not found" in response.text


def test_bad_parameters_are_plain_pages(app: TestClient, ehr: TestEhr) -> None:
    _coordinator(app, ehr)
    for path, status, words in (
        ("/app/cohort?trial=NCT00000000", 404, "does not serve a trial"),
        ("/app/patient?id=p01&as_of=yesterday", 400, "as_of must be a date"),
        ("/app/patient?id=Patient/a/b", 400, "not a FHIR Patient id"),
        ("/app/patient", 400, "did not say which patient"),
    ):
        response = app.get(path)
        assert response.status_code == status, path
        assert words in response.text, path
        assert "text/html" in response.headers["content-type"]


def test_the_stylesheet_is_served(app: TestClient) -> None:
    response = app.get("/app/static/app.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in response.text


def test_page_views_are_audited(app: TestClient, ehr: TestEhr) -> None:
    _coordinator(app, ehr)
    app.get("/app/cohort.csv?trial=NCT06946485")
    events = state_of(app.app).audit.recent()
    actions = [e.action for e in events]
    assert "page.cohort" in actions
    assert "page.cohort.csv" in actions
    cohort = next(e for e in events if e.action == "page.cohort")
    assert cohort.outcome.endswith("screened")
    assert cohort.subject == f"{ehr.iss}/Practitioner/dr-lee"
    assert "Patient/p01" in cohort.patients


def test_the_cohort_page_streams_progress_before_the_results(
    make_settings: Callable[..., Settings], ehr: TestEhr, fake: FakeFhir
) -> None:
    """Over a real server: the head and a progress line arrive while patients are screened."""
    settings = make_settings(fhir_concurrency=1)  # batches of 4: progress after each
    with serve(app_for(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        launch(client, ehr, patient=None, target=COHORT)

        def slow_patient(request: httpx.Request) -> httpx.Response:
            time.sleep(0.05)  # the EHR's thread: a slow FHIR server
            return _unfaulted(fake, request)

        fake.faults["Patient"] = slow_patient
        with client.stream("GET", COHORT) as response:
            chunks = list(response.iter_text())
    assert "Finding patients" in chunks[0]
    assert "Ranked candidates" not in chunks[0]
    page = "".join(chunks)
    assert page.index("Screening 12 patients…") < page.index("Screened 4 of 12 patients…")
    assert page.index("Screened 8 of 12 patients…") < page.index("Ranked candidates")


def test_pages_show_the_mrn_and_why_a_deceased_patient_is_out(
    app: TestClient, ehr: TestEhr, fake: FakeFhir
) -> None:
    p01 = next(r for r in fake.resources if r["resourceType"] == "Patient" and r["id"] == "p01")
    p01["identifier"] = [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ],
                "text": "住院号",
            },
            "value": "ZY20260451",
        }
    ]
    p01["deceasedDateTime"] = "2026-10-01T03:00:00+08:00"
    page = _coordinator(app, ehr)
    row = page.split('data-patient="Patient/p01"')[1].split("</tr>")[0]
    assert "ZY20260451" in row
    assert "deceased on 2026-10-01" in row
    assert "Ineligible" in row
    checklist = app.get(f"/app/patient?id=p01&trial=NCT06946485&as_of={AS_OF}").text
    assert "Not a candidate" in checklist
    assert "deceased on 2026-10-01" in checklist.split("Not a candidate")[1]
    assert "ZY20260451" in checklist
    assert "住院号" in checklist
    assert "Inclusion criteria" in checklist  # the criteria are still shown


def test_the_checklist_lists_the_other_trials_the_patient_may_fit(
    app: TestClient, ehr: TestEhr
) -> None:
    _coordinator(app, ehr)
    page = app.get(f"/app/patient?id=p01&trial=NCT06946485&as_of={AS_OF}").text
    section = page.split('id="other-trials"')[1].split("</section>")[0]
    assert 'data-other-trial="NCT06421701"' in section
    assert 'data-trial-status="possibly_eligible"' in section
    assert "Next: I7.plt: Order a complete blood count." in section
    assert "/app/patient?id=p01&amp;trial=NCT06421701" in section
    assert 'data-other-trial="NCT06946485"' not in section  # the trial shown is not "other"
    # from the other trial's checklist, the first one is listed back
    other = app.get(f"/app/patient?id=p01&trial=NCT06421701&as_of={AS_OF}").text
    assert 'data-other-trial="NCT06946485"' in other.split('id="other-trials"')[1]


def test_an_ineligible_patients_page_says_why_and_lists_no_trial_it_is_out_of(
    app: TestClient, ehr: TestEhr
) -> None:
    _coordinator(app, ehr)
    page = app.get(f"/app/patient?id=p05&trial=NCT06946485&as_of={AS_OF}").text
    steps = page.split('id="next"')[1].split("</section>")[0]
    assert "fails I6.hgb: Hemoglobin mass concentration in blood 58 g/L" in steps
    assert "Order" not in steps  # no test ordered for a patient already out
    section = page.split('id="other-trials"')[1].split("</section>")[0]
    assert "rules the patient out of every other trial" in section
    cohort = _coordinator(app, ehr)
    row = cohort.split('data-patient="Patient/p05"')[1].split("</tr>")[0]
    assert "fails I6.hgb: Hemoglobin mass concentration" in row


def test_rows_name_the_patient_and_link_their_record_in_the_ehr(
    make_app: Callable[..., TestClient], ehr: TestEhr, fake: FakeFhir
) -> None:
    p01 = next(r for r in fake.resources if r["resourceType"] == "Patient" and r["id"] == "p01")
    p01["name"] = [{"use": "official", "family": "Doe", "given": ["Jane"]}]
    app = make_app(ehr_patient_url="https://ehr.test/chart?patient={id}")
    page = _coordinator(app, ehr)
    row = re.search(r'<tr [^>]*data-patient="Patient/p01">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "Jane Doe" in row.group(1)
    assert 'href="https://ehr.test/chart?patient=p01"' in row.group(1)
    csv = app.get("/app/cohort.csv", params={"trial": "NCT06946485", "as_of": AS_OF}).text
    assert ",Patient/p01,Jane Doe,NJ0000001," in csv


def test_without_an_ehr_url_there_is_no_record_link(app: TestClient, ehr: TestEhr) -> None:
    assert 'class="ehr"' not in _coordinator(app, ehr)
