"""Incremental sweeps against the real FHIR server (sekmet-fhir): a second run asks only for
what changed (`_since`), learns deletions from type history, and ends with exactly the
verdicts a full export would give. The server is this module's own: the tests change data.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from service.sweeps import Source, SweepRunner, SweepStore
from service.sweeps.report import diff_runs
from tests.integration.conftest import running_server
from tests.sweeps.conftest import AS_OF, TRIAL, sweep_settings, verdicts_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


def test_an_incremental_sweep_reads_only_the_changes_and_equals_a_full_one(
    own_server: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    store = SweepStore(url)
    source = Source.fhir(own_server)
    try:
        runner = SweepRunner(sweep_settings(url, fhir_base_url=own_server), store)
        first = runner.sweep(TRIAL, AS_OF, source, "test")
        assert first.status == "completed", first.error
        assert (first.mode, first.based_on) == ("full", None)
        assert first.changes is not None
        assert first.changes["reason"].startswith("no snapshot")

        with httpx.Client(base_url=own_server + "/") as fhir:
            # p01: hemoglobin 118 -> 50 g/L (I6.hgb pass -> fail)
            observation = fhir.get("Observation/p01-o18").json()
            observation["valueQuantity"]["value"] = 50.0
            assert fhir.put("Observation/p01-o18", json=observation).status_code == 200
            # p05: its only hemoglobin recoded out of every value set (I6.hgb fail -> unknown):
            # the delta still names it, so the old version must leave the snapshot
            observation = fhir.get("Observation/p05-o18").json()
            observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}
            assert fhir.put("Observation/p05-o18", json=observation).status_code == 200
            # p30: the TTP diagnosis deleted (E2 fail -> pass); only history tells
            assert fhir.delete("Condition/p30-c33").status_code in (200, 204)

        second = runner.sweep(TRIAL, AS_OF, source, "test")
        assert second.status == "completed", second.error
        assert (second.mode, second.based_on) == ("incremental", first.id)
        changes = second.changes or {}
        assert changes["read"] == 2  # the two Observations, not the population
        assert (changes["replaced"], changes["deleted"], changes["patients"]) == (2, 1, 3)
        assert changes["since"] == first.transaction_time.isoformat()  # type: ignore[union-attr]
        assert second.counts["patients"] == 71

        diff = diff_runs(store, first, second)
        changed = {c.patient: c for c in [*diff.new, *diff.dropped, *diff.status, *diff.verdicts]}
        assert set(changed) == {"Patient/p01", "Patient/p05", "Patient/p30"}
        criteria = {
            p: {(c.id, c.before, c.after) for c in ch.criteria} for p, ch in changed.items()
        }
        assert ("I6.hgb", "pass", "fail") in criteria["Patient/p01"]
        assert ("I6.hgb", "fail", "unknown") in criteria["Patient/p05"]
        assert ("E2", "fail", "pass") in criteria["Patient/p30"]

        full = runner.sweep(TRIAL, AS_OF, source, "test", full=True)
        assert full.status == "completed", full.error
        assert full.mode == "full"
        assert full.changes["reason"] == "full export requested"
        assert verdicts_of(store, full.id) == verdicts_of(store, second.id)

        # Nothing changed on the server, but the date did: everyone is evaluated again, so
        # p20, 17 until tomorrow, turns 18 (I5 fail -> pass) in a run that read nothing.
        later = runner.sweep(TRIAL, AS_OF + timedelta(days=1), source, "test")
        assert (later.mode, later.based_on) == ("incremental", full.id)
        assert (later.changes or {})["read"] == 0
        moved = diff_runs(store, full, later)
        i5 = {
            c.patient: [(x.id, x.before, x.after) for x in c.criteria if x.id == "I5"]
            for c in [*moved.new, *moved.dropped, *moved.status, *moved.verdicts]
        }
        assert i5["Patient/p20"] == [("I5", "fail", "pass")]
    finally:
        store.close()


def test_a_record_deleted_as_the_export_ends_leaves_the_snapshot_in_that_run(
    own_server: str, tmp_path: Path
) -> None:
    """History is read while the export runs and once more after it
    (service/fhir/history.py). The first reading of a quiet server is over long before the
    export (sekmet's job takes a second or more): a deletion as the export ends is only in
    the second, and must still leave the snapshot in this run."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    store = SweepStore(url)
    source = Source.fhir(own_server)
    try:
        runner = SweepRunner(sweep_settings(url, fhir_base_url=own_server), store)
        first = runner.sweep(TRIAL, AS_OF, source, "test")
        assert first.status == "completed", first.error
        assert verdicts_of(store, first.id)["Patient/p39"]["E11"] == "fail"  # schizophrenia
        stages: list[str] = []

        def progress(stage: str, _done: int, _total: int) -> None:
            if stage == "history" and "history" not in stages:  # the export is done
                with httpx.Client(base_url=own_server + "/") as fhir:
                    assert fhir.delete("Condition/p39-c33").status_code in (200, 204)
            stages.append(stage)

        second = runner.sweep(TRIAL, AS_OF, source, "test", progress=progress)
        assert second.status == "completed", second.error
        assert "history" in stages
        assert (second.mode, second.based_on) == ("incremental", first.id)
        assert (second.changes or {})["deleted"] == 1
        assert verdicts_of(store, second.id)["Patient/p39"]["E11"] != "fail"
        full = runner.sweep(TRIAL, AS_OF, source, "test", full=True)
        assert verdicts_of(store, full.id) == verdicts_of(store, second.id)
    finally:
        store.close()
