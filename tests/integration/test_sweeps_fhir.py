"""Sweeps from the real FHIR server (sekmet-fhir): Bulk export -> screen -> store.

The read-only test uses the shared `fhir_server`; the tests that change data on the server
(one patient's hemoglobin, the write-back) get a server of their own, so no other test ever
sees those changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from service.sweeps import Source, SweepRunner, SweepStore
from service.sweeps.report import diff_runs, group_id, study_id
from tests.integration.conftest import running_server
from tests.sweeps.conftest import AS_OF, DEMO, TRIAL, sweep, sweep_settings, verdicts_of

pytestmark = pytest.mark.integration


def test_a_sweep_from_the_fhir_server_equals_the_sweep_of_the_files(
    fhir_server: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    store = SweepStore(url)
    try:
        runner = SweepRunner(sweep_settings(url, fhir_base_url=fhir_server), store)
        stages: list[str] = []
        from_server = runner.sweep(
            TRIAL,
            AS_OF,
            Source.fhir(fhir_server),
            "test",
            progress=lambda s, d, t: stages.append(s),
        )
        assert from_server.status == "completed", from_server.error
        from_files = sweep(runner, DEMO)
        assert verdicts_of(store, from_server.id) == verdicts_of(store, from_files.id)
        assert from_server.counts["patients"] == 71
        assert from_server.source_kind == "fhir"
        assert from_server.source == fhir_server
        assert from_server.transaction_time is not None  # the `_since` of a later run
        assert "export" in stages
        # unreadable records are named by their reference on the server, not by a file
        assert "Observation/p41-broken-value: Quantity.value is not a number: '1O2'" in (
            from_server.problems
        )
        assert not any(tempfile.gettempdir() in p or ".ndjson" in p for p in from_server.problems)
        assert diff_runs(store, from_files, from_server).counts["unchanged"] == 71
    finally:
        store.close()


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


def test_changing_one_patient_on_the_server_shows_exactly_that_patient_and_writes_back(
    own_server: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    settings: Settings = sweep_settings(url, fhir_base_url=own_server, sweep_write_back=True)
    store = SweepStore(url)
    try:
        runner = SweepRunner(settings, store)
        first = runner.sweep(TRIAL, AS_OF, Source.fhir(own_server), "test")
        assert first.status == "completed", first.error
        assert first.write_back == f"ok: 37 resources written to {own_server}"

        with httpx.Client(base_url=own_server + "/") as fhir:
            study = fhir.get(f"ResearchStudy/{study_id(TRIAL)}").json()
            assert study["identifier"] == [
                {"system": "https://clinicaltrials.gov", "value": "NCT06946485"}
            ]
            observation = fhir.get("Observation/p01-o18").json()
            observation["valueQuantity"]["value"] = 50.0  # hemoglobin 118 -> 50 g/L
            assert fhir.put("Observation/p01-o18", json=observation).status_code == 200

            second = runner.sweep(TRIAL, AS_OF, Source.fhir(own_server), "test")
            assert second.status == "completed", second.error
            diff = diff_runs(store, first, second)
            changed = [*diff.new, *diff.dropped, *diff.status, *diff.verdicts]
            assert [(c.patient, c.change) for c in changed] == [("Patient/p01", "dropped")]
            assert [(c.id, c.before, c.after) for c in changed[0].criteria] == [
                ("I6.hgb", "pass", "fail")
            ]
            # The write-back replaced the Group's members and marked p01 ineligible.
            group = fhir.get(f"Group/{group_id(TRIAL)}").json()
            assert group["quantity"] == 34
            assert "Patient/p01" not in {m["entity"]["reference"] for m in group["member"]}
            subjects = {
                e["resource"]["individual"]["reference"]: e["resource"]["status"]
                for e in fhir.get("ResearchSubject", params={"_count": "1000"})
                .json()
                .get("entry", [])
                if e["resource"]["id"].startswith("cm-")
            }
            assert subjects["Patient/p01"] == "ineligible"
            assert sum(status == "candidate" for status in subjects.values()) == 34
        # ResearchStudy, Group, 34 candidates, and p01's ResearchSubject now `ineligible`
        assert store.get(second.id).write_back == f"ok: 37 resources written to {own_server}"
    finally:
        store.close()
