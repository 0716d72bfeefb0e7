"""The coordinator page from a completed sweep of the EHR's FHIR server, or on demand.

A sweep of a FHIR server is the real runner with its Bulk export replaced by a copy of
Bundles (the export is tested in tests/sweeps and tests/fhir): what is stored, ranked and
counted is what a sweep of that server would store. The swept population is p01-p06 while
the EHR serves p01-p12, so a page from the sweep is told from a page screened on demand.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app_state import state_of
from service.fhir.bulk import ExportResult
from service.sweeps import Source, SweepRunner
from service.sweeps.report import csv_lines
from service.sweeps.runner import Export
from service.sweeps.store import RunInfo, SweepStore
from service.worklist.model import Decision, DecisionState
from tests.smart.conftest import AS_OF, SMALL_PATIENTS, launch
from tests.smart.ehr import TestEhr

TRIAL = "NCT06946485"
COHORT = f"/app/cohort?trial={TRIAL}&as_of={AS_OF}"
SWEPT = 6  # patients in the sweep; the EHR has SMALL_PATIENTS
CONFIGURED = "http://fhir.test/fhir"  # a COHORT_MATCH_FHIR_BASE_URL the EHR proxies


@pytest.fixture
def swept_data(small_demo: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "swept"
    folder.mkdir()
    for path in sorted(small_demo.glob("p*.json")):
        if int(path.name[1:3]) <= SWEPT:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def sweep_of(swept_data: Path) -> Callable[..., tuple[RunInfo, SweepStore]]:
    """sweep_of(app, source): a completed sweep of `source` (a FHIR URL, or files) into the
    app's own store, by a runner whose exporter gives the swept Bundles for a FHIR source."""

    def export(run: RunInfo, plan: Any, level: str, out: Path, *_: Any) -> Export:
        shutil.copytree(swept_data, out)
        result = ExportResult(out, "bulk-export", dt.datetime.now(dt.UTC), ())
        return Export(result, frozenset(), [])

    def make(app: TestClient, source: str, as_of: str = AS_OF) -> tuple[RunInfo, SweepStore]:
        sweeps = state_of(app.app).sweeps
        settings = sweeps.settings.model_copy(update={"sweep_workers": 1})
        where = Source.fhir(source) if source.startswith("http") else Source.files(Path(source))
        run = SweepRunner(settings, sweeps.store, export).sweep(
            TRIAL, dt.date.fromisoformat(as_of), where, "test"
        )
        assert run.status == "completed", run.error
        return run, sweeps.store

    return make


def _ranked(page: str) -> list[str]:
    return re.findall(r'data-patient="([^"]+)"', page)


def _href(page: str, text: str) -> str:
    found = re.search(rf'<a href="([^"]+)"[^>]*>{text}</a>', page)
    assert found is not None, text
    return found.group(1).replace("&amp;", "&")


def _csv_href(page: str) -> str:
    found = re.search(r'<a class="button" href="([^"]+)" download>', page)
    assert found is not None
    return found.group(1).replace("&amp;", "&")


def _coordinator(app: TestClient, ehr: TestEhr, target: str = COHORT) -> str:
    flow = launch(app, ehr, patient=None, target=target)
    assert flow.page is not None
    assert flow.page.status_code == 200, flow.page.text
    return flow.page.text


def _from_sweep(page: str) -> bool:
    return "From sweep #" in page


def test_the_page_shows_the_sweep_of_the_ehrs_server(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    run, store = sweep_of(app, ehr.iss)
    _coordinator(app, ehr)
    before = len(ehr.fhir_requests())
    page = app.get(COHORT).text
    assert len(ehr.fhir_requests()) == before  # nothing screened: read from the store

    in_rank_order = [s.patient for s in store.summaries(run.id)]
    assert len(in_rank_order) == SWEPT
    assert _ranked(page) == in_rank_order
    assert f"From sweep #{run.id} completed " in page
    assert f"as of {AS_OF} — " in page
    assert "Finding patients" not in page
    assert "patients…" not in page
    assert f"{SWEPT} screened:" in page
    assert "Attrition, in protocol order" in page

    # The CSV link names the sweep; it is the sweep's own CSV (report.csv_lines).
    csv_href = _csv_href(page)
    assert f"sweep={run.id}" in csv_href
    csv = app.get(csv_href)
    assert csv.status_code == 200
    assert csv.text == "".join(csv_lines(store, run))
    # Without the sweep named, the CSV makes the same choice as the page.
    assert app.get(f"/app/cohort.csv?trial={TRIAL}&as_of={AS_OF}").text == csv.text

    # Patient links open the live checklist on the EHR.
    link = _href(page, "Patient/p01")
    assert link.startswith("/app/patient?id=p01&")
    checklist = app.get(link)
    assert checklist.status_code == 200
    assert "Patient/p01" in checklist.text
    assert len(ehr.fhir_requests()) > before

    events = state_of(app.app).audit.recent()
    cohort = next(e for e in events if e.action == "page.cohort")
    assert cohort.outcome == f"sweep {run.id}: {SWEPT} screened"
    assert sorted(json.loads(cohort.patients)) == sorted(in_rank_order)


def test_the_status_filter_on_a_sweep(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    run, store = sweep_of(app, ehr.iss)
    page = _coordinator(app, ehr, COHORT + "&status=ineligible")
    expected = [s.patient for s in store.summaries(run.id) if s.status == "ineligible"]
    assert expected
    assert _from_sweep(page)
    assert _ranked(page) == expected
    csv = app.get(_csv_href(page)).text.splitlines()
    assert csv[0] == next(csv_lines(store, run)).rstrip("\n")
    assert [line.split(",")[1] for line in csv[1:]] == expected


def test_fresh_screens_on_demand(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    sweep_of(app, ehr.iss)
    page = _coordinator(app, ehr)
    fresh = _href(page, "screen now")
    assert "fresh=1" in fresh
    assert f"as_of={AS_OF}" in fresh  # the page was asked for a date: the link keeps it
    screened = app.get(fresh).text
    assert not _from_sweep(screened)
    assert f"Screening {SMALL_PATIENTS} patients…" in screened
    assert len(_ranked(screened)) == SMALL_PATIENTS
    assert '<input type="hidden" name="fresh" value="1">' in screened
    csv = app.get(_csv_href(screened))
    assert "fresh=1" in _csv_href(screened)
    assert len(csv.text.splitlines()) == SMALL_PATIENTS + 1


def test_another_as_of_screens_on_demand(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    run, _ = sweep_of(app, ehr.iss)
    _coordinator(app, ehr)
    page = app.get(f"/app/cohort?trial={TRIAL}&as_of=2026-11-21").text
    assert not _from_sweep(page)
    assert len(_ranked(page)) == SMALL_PATIENTS
    # Without a date, the sweep's date is the page's.
    page = app.get(f"/app/cohort?trial={TRIAL}").text
    assert f"From sweep #{run.id}" in page
    assert f"as of {AS_OF}" in page
    assert f"as_of={AS_OF}" not in _href(page, "screen now")  # screen now: as of today


def test_sweeps_of_other_sources_are_not_shown(
    app: TestClient,
    ehr: TestEhr,
    swept_data: Path,
    sweep_of: Callable[..., tuple[RunInfo, SweepStore]],
) -> None:
    sweep_of(app, str(swept_data))  # files: nothing ties their ids to the EHR's
    sweep_of(app, "http://elsewhere.test/fhir")
    sweep_of(app, CONFIGURED)  # not configured in this app
    page = _coordinator(app, ehr)
    assert not _from_sweep(page)
    assert f"Screening {SMALL_PATIENTS} patients…" in page
    csv = app.get(f"/app/cohort.csv?trial={TRIAL}&as_of={AS_OF}")
    assert len(csv.text.splitlines()) == SMALL_PATIENTS + 1


def test_a_sweep_of_the_configured_server_when_the_ehr_is_the_only_issuer(
    make_app: Callable[..., TestClient],
    ehr: TestEhr,
    sweep_of: Callable[..., tuple[RunInfo, SweepStore]],
) -> None:
    app = make_app(fhir_base_url=CONFIGURED)
    run, _ = sweep_of(app, CONFIGURED)
    page = _coordinator(app, ehr)
    assert f"From sweep #{run.id}" in page
    assert len(_ranked(page)) == SWEPT


def test_not_with_two_ehrs_on_the_allowlist(
    make_app: Callable[..., TestClient],
    ehr: TestEhr,
    sweep_of: Callable[..., tuple[RunInfo, SweepStore]],
) -> None:
    app = make_app(
        fhir_base_url=CONFIGURED, smart_issuers=f"{ehr.iss},https://other-ehr.example/fhir"
    )
    sweep_of(app, CONFIGURED)
    page = _coordinator(app, ehr)
    assert not _from_sweep(page)
    assert len(_ranked(page)) == SMALL_PATIENTS


def test_a_sweep_that_cannot_be_shown_is_a_plain_page(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    run, _ = sweep_of(app, "http://elsewhere.test/fhir")
    _coordinator(app, ehr)
    for sweep, status, words in ((run.id, 409, "cannot be shown"), ("x", 400, "run number")):
        response = app.get(f"/app/cohort.csv?trial={TRIAL}&sweep={sweep}")
        assert response.status_code == status
        assert words in response.text
        assert "text/html" in response.headers["content-type"]


def test_the_page_shows_the_recruitment_report_as_a_funnel_and_a_table(
    app: TestClient, ehr: TestEhr, sweep_of: Callable[..., tuple[RunInfo, SweepStore]]
) -> None:
    run, _ = sweep_of(app, ehr.iss)
    now = state_of(app.app).clock.now()
    decided: list[tuple[str, DecisionState, str | None]] = [
        ("p01", "screen_failed", "I6.hgb"),
        ("p02", "enrolled", None),
    ]
    for patient, state, criterion in decided:
        decision = Decision(
            TRIAL, f"Patient/{patient}", state, "coordinator-7", now, criterion=criterion
        )
        state_of(app.app).decisions.record(decision)  # type: ignore[arg-type]
    page = _coordinator(app, ehr)
    section = page[page.index('<section aria-labelledby="recruitment">') :]
    assert f"(#{run.id})" in section
    svg = section[section.index("<svg") : section.index("</svg>")]
    assert 'role="img"' in svg
    assert '<title id="recruitment-title">Recruitment funnel' in svg
    assert f"Screened by the engine {SWEPT}, " in svg  # the <desc>
    rows = re.findall(
        r'<tr><th scope="row">([^<]+)</th><td class="mono">([^<]*)</td><td>(\d+)</td>', section
    )
    table = {(label, criterion): int(count) for label, criterion, count in rows}
    assert table[("Screened by the engine", "")] == SWEPT
    assert table[("Reviewed", "")] == 2
    assert table[("Enrolled", "")] == 1
    assert table[("Screen-failed", "")] == 1
    assert table[("Screen-failed on", "I6.hgb")] == 1
    assert table[("Contacted", "")] == 0
