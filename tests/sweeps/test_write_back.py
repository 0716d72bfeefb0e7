"""Write-back to the FHIR server (off by default), and whose credentials go where."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from service.audit import AuditStore
from service.config import Settings
from service.fhir import NoAuth, StaticBearer
from service.sweeps import SweepRunner, SweepStore
from service.sweeps.runner import fhir_auth
from service.worklist.model import Decision
from service.worklist.research_subject import research_subject, subject_id
from service.worklist.store import DecisionStore
from service.worklist.subjects import SubjectStore
from tests.sweeps.conftest import TRIAL, set_observation_value, sweep, sweep_settings

FHIR = "http://fhir.test/fhir"
TOKEN = "static-test-token"  # noqa: S105 - a test value, valid nowhere


def test_write_back_is_off_by_default_and_needs_a_fhir_server() -> None:
    assert Settings().sweep_write_back is False
    with pytest.raises(ValueError, match="WRITE_BACK=true needs COHORT_MATCH_FHIR_BASE_URL"):
        Settings(sweep_write_back=True)


def test_credentials_only_go_to_the_configured_server() -> None:
    settings = Settings(fhir_base_url=FHIR + "/", fhir_auth="bearer", fhir_token=TOKEN)
    assert isinstance(fhir_auth(settings, FHIR), StaticBearer)
    assert isinstance(fhir_auth(settings, "http://elsewhere.test/fhir"), NoAuth)
    assert isinstance(fhir_auth(Settings(fhir_base_url=FHIR), FHIR), NoAuth)


@pytest.fixture
def writing(db_url: str) -> SweepRunner:
    settings = sweep_settings(
        db_url, fhir_base_url=FHIR, fhir_auth="bearer", fhir_token=TOKEN, sweep_write_back=True
    )
    return SweepRunner(settings, SweepStore(db_url))


def test_a_completed_run_is_written_back_as_one_transaction(
    writing: SweepRunner, demo_copy: Path
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.get(FHIR + "/ResearchSubject").mock(return_value=_searchset())  # read back first
        route = mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        run = sweep(writing, demo_copy)
    assert run.write_back == f"ok: 37 resources written to {FHIR}"
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/fhir+json"
    bundle = json.loads(request.content)
    assert bundle["type"] == "transaction"
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT"] * 37
    writing.store.close()


def test_a_failed_write_back_is_recorded_and_the_run_stays_completed(
    writing: SweepRunner, demo_copy: Path
) -> None:
    with respx.mock() as mock:
        mock.get(FHIR + "/ResearchSubject").mock(return_value=_searchset())
        mock.post(FHIR).mock(return_value=httpx.Response(500, text="store offline"))
        run = sweep(writing, demo_copy)
    assert run.status == "completed"
    assert run.write_back == "failed: the FHIR server answered 500 to the write-back: store offline"
    writing.store.close()


# ---------------------------------------------------------------- decisions and read-back
def _searchset(*resources: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in resources],
        },
    )


def _subjects_in(route: respx.Route) -> dict[str, str]:
    bundle = json.loads(route.calls.last.request.content)
    return {
        e["resource"]["individual"]["reference"]: e["resource"]["status"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "ResearchSubject"
    }


def test_the_sweep_keeps_decisions_retries_them_and_reads_the_ehrs_changes_back(
    writing: SweepRunner, demo_copy: Path
) -> None:
    store = writing.store
    with respx.mock(assert_all_called=True) as mock:
        mock.get(FHIR + "/ResearchSubject").mock(return_value=_searchset())
        mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        first = sweep(writing, demo_copy)
    assert first.write_back == f"ok: 37 resources written to {FHIR}"
    candidates = [c.patient for c in store.summaries(first.id, candidates_only=True)]
    assert "Patient/p01" in candidates
    p02, p03, p04 = [p for p in candidates if p != "Patient/p01"][:3]
    decisions, subjects = DecisionStore(store.engine), SubjectStore(store.engine)
    now = dt.datetime.now(dt.UTC)
    # p01 enrolled, its write-back failed; p02 contacted, written (the EHR shows screening).
    enrolled = decisions.record(Decision(TRIAL, "Patient/p01", "enrolled", "coordinator-7", now))
    assert enrolled.id is not None
    subjects.outcome(TRIAL, "Patient/p01", enrolled.id, "failed", now, detail="503")
    contacted = decisions.record(Decision(TRIAL, p02, "contacted", "coordinator-7", now))
    assert contacted.id is not None
    subjects.outcome(TRIAL, p02, contacted.id, "written", now, status="screening")

    # p01's hemoglobin falls: the engine drops them (ineligible) while they are enrolled.
    set_observation_value(demo_copy, "p01-", "p01-o18", 50.0)
    in_ehr = [
        research_subject(TRIAL, p02, "screening"),  # as cohort-match wrote it
        research_subject(TRIAL, p03, "on-study"),  # candidate -> on-study in the EHR
        research_subject(TRIAL, p04, "off-study"),  # a status no decision state reads
        research_subject("NCT00000001", p03, "withdrawn"),  # another study's: not read
    ]
    with respx.mock(assert_all_called=True) as mock:
        mock.get(FHIR + "/ResearchSubject").mock(return_value=_searchset(*in_ehr))
        route = mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        second = sweep(writing, demo_copy)

    written = _subjects_in(route)
    assert written["Patient/p01"] == "on-study"  # the decision, retried; never ineligible
    for held in (p02, p03, p04):
        assert held not in written  # agrees with its decision, or left as the EHR has it
    assert set(written) == {*candidates, "Patient/p01"} - {p02, p03, p04}
    assert {written[p] for p in written if p != "Patient/p01"} == {"candidate"}
    assert second.write_back == (
        f"ok: {len(written) + 2} resources written to {FHIR}; 1 decision(s) read back from the "
        "EHR; 1 status(es) changed in the EHR that no decision state reads, left as they are: "
        f"ResearchSubject/{subject_id(TRIAL, p04)} status off-study"
    )
    [read] = decisions.history(TRIAL, p03)
    assert (read.state, read.subject) == ("enrolled", "ehr")
    assert read.note == f"read back from ResearchSubject/{subject_id(TRIAL, p03)}: status on-study"
    assert read.basis is not None
    assert read.basis.status in ("likely_eligible", "possibly_eligible")
    after = {p: subjects.get(TRIAL, p) for p in ("Patient/p01", p03)}
    assert (after["Patient/p01"].status, after["Patient/p01"].outcome) == ("on-study", "written")
    assert (after[p03].status, after[p03].source) == ("on-study", "ehr")
    [row] = [r for r in AuditStore(store.engine).recent() if r.action == "decision.read_back"]
    assert (row.subject, row.trial_id, json.loads(row.patients)) == ("ehr", TRIAL, [p03])
    store.close()


def test_a_failed_read_back_writes_nothing(writing: SweepRunner, demo_copy: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(FHIR + "/ResearchSubject").mock(return_value=httpx.Response(403, text="no"))
        route = mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        run = sweep(writing, demo_copy)
    assert route.call_count == 0
    assert run.status == "completed"
    assert run.write_back is not None
    assert run.write_back.startswith(
        "failed: the FHIR server answered 403 to reading the ResearchSubjects back: "
    )
    writing.store.close()


def test_a_server_without_the_study_search_is_read_whole(
    writing: SweepRunner, demo_copy: Path
) -> None:
    """sekmet-fhir 0.1.1 refuses ResearchSubject?study= (400 not-supported)."""
    refused = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "study"}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if "study" in request.url.params:
            return httpx.Response(400, json=refused)
        return _searchset()

    with respx.mock() as mock:
        search = mock.get(FHIR + "/ResearchSubject").mock(side_effect=answer)
        mock.post(FHIR).mock(return_value=httpx.Response(200, json={}))
        run = sweep(writing, demo_copy)
    assert run.write_back == f"ok: 37 resources written to {FHIR}"
    assert ["study" in c.request.url.params for c in search.calls] == [True, False]
    writing.store.close()


def test_a_trial_file_changed_during_the_run_fails_it(
    runner: SweepRunner, store: SweepStore, tmp_path: Path
) -> None:
    from service.sweeps import Source
    from tests.sweeps.conftest import AS_OF, DEMO, TRIAL

    run_id = runner.begin(TRIAL, AS_OF, Source.files(DEMO), "test")
    trials = tmp_path / "trials"
    trials.mkdir()
    original = (runner.settings.trials_dir / f"{TRIAL}.yaml").read_text(encoding="utf-8")
    (trials / f"{TRIAL}.yaml").write_text(
        original.replace('version: "2026-12-03.1"', 'version: "2026-12-04.1"'), encoding="utf-8"
    )
    runner.settings = runner.settings.model_copy(update={"trials_dir": trials})
    run = runner.execute(run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert "changed to version 2026-12-04.1 after the run was started with 2026-12-03.1" in (
        run.error
    )
