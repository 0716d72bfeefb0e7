"""Which stored sweep the coordinator page may show: one test per case of the policy
(service/web/sweep_choice.py's docstring)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from service.sweeps.store import RunInfo
from service.web.sweep_choice import Wanted, named_fits, newest, same_server, showable

EHR = "https://ehr.hospital.test/fhir"
OTHER_EHR = "https://ehr.clinic.test/fhir"
CONFIGURED = "https://fhir.hospital.test/fhir"  # COHORT_MATCH_FHIR_BASE_URL
AS_OF = dt.date(2026, 11, 20)
WANTED = Wanted(
    trial_id="NCT06946485",
    trial_version="2026-12-03.1",
    terminology_version="tables-7",
    iss=EHR,
    issuers=(EHR,),
    configured=CONFIGURED,
)


def run(run_id: int = 1, **changes: Any) -> RunInfo:
    """A completed FHIR run of the EHR's server, of the trial and tables served now."""
    moment = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
    base = RunInfo(
        id=run_id,
        trial_id="NCT06946485",
        trial_version="2026-12-03.1",
        terminology_version="tables-7",
        as_of=AS_OF,
        source_kind="fhir",
        source=EHR,
        status="completed",
        requested_by="scheduler",
        started_at=moment,
        ended_at=moment,
        heartbeat_at=moment,
        pid=1,
        host="h",
        cancel_requested=False,
        stage="done",
        done=6,
        total=6,
        stored=6,
        counts={"patients": 6},
        transaction_time=moment,
        criteria=[],
        attrition=None,
        problems=[],
        error=None,
        write_back=None,
        results_purged=False,
    )
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------ same server
def test_a_run_of_the_sessions_own_ehr_is_of_the_same_server() -> None:
    assert same_server(run(source=EHR + "/"), WANTED)


def test_a_run_of_the_configured_server_counts_when_the_ehr_is_the_only_one_allowed() -> None:
    assert same_server(run(source=CONFIGURED), WANTED)


def test_a_run_of_the_configured_server_does_not_count_with_two_ehrs_allowed() -> None:
    two = dataclasses.replace(WANTED, issuers=(EHR, OTHER_EHR))
    assert not same_server(run(source=CONFIGURED), two)


def test_a_run_of_files_is_never_of_the_ehrs_server() -> None:
    assert not same_server(run(source_kind="files", source=EHR), WANTED)


def test_a_run_of_another_server_is_not_of_the_ehrs_server() -> None:
    assert not same_server(run(source=OTHER_EHR), WANTED)


# ------------------------------------------------------------------ showable
def test_a_completed_run_of_the_trial_and_tables_served_now_is_showable() -> None:
    assert showable(run(), WANTED)


def test_a_run_of_another_trial_is_not_showable() -> None:
    assert not showable(run(trial_id="DEMO-LN-001"), WANTED)


def test_a_run_without_its_results_is_not_showable() -> None:
    assert not showable(run(status="running"), WANTED)
    assert not showable(run(results_purged=True), WANTED)


def test_a_run_of_another_trial_version_is_not_showable() -> None:
    assert not showable(run(trial_version="2026-01-01.1"), WANTED)


def test_a_run_of_other_code_tables_is_not_showable() -> None:
    assert not showable(run(terminology_version="tables-6"), WANTED)


# ------------------------------------------------------------------ which one
def test_the_newest_showable_run_is_shown() -> None:
    runs = [run(3, status="failed"), run(2), run(1)]
    assert newest(runs, WANTED) == runs[1]


def test_without_a_showable_run_the_page_screens_on_demand() -> None:
    assert newest([run(2, source_kind="files"), run(1, status="cancelled")], WANTED) is None


def test_an_as_of_other_than_the_newest_runs_screens_on_demand() -> None:
    later = dataclasses.replace(WANTED, as_of=AS_OF + dt.timedelta(days=1))
    assert newest([run(2), run(1, as_of=later.as_of)], later) is None


def test_the_newest_run_of_the_as_of_asked_for_is_shown() -> None:
    assert newest([run(2)], dataclasses.replace(WANTED, as_of=AS_OF)) == run(2)


def test_a_named_sweep_that_is_still_showable_is_shown() -> None:
    assert named_fits(run(5), WANTED)
    assert named_fits(run(5), dataclasses.replace(WANTED, as_of=AS_OF))


def test_a_named_sweep_that_is_gone_or_no_longer_showable_is_refused() -> None:
    assert not named_fits(None, WANTED)
    assert not named_fits(run(5, results_purged=True), WANTED)


def test_a_named_sweep_of_another_as_of_is_refused() -> None:
    later = dataclasses.replace(WANTED, as_of=AS_OF + dt.timedelta(days=1))
    assert not named_fits(run(5), later)
