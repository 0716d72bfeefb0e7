"""When a FHIR sweep may start from the previous run's snapshot, and when it exports in full.

The merge itself is in test_snapshot.py; the whole flow against the real server in
tests/integration/test_sweeps_incremental.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import httpx
import pytest
import respx

from service.config import Settings
from service.sweeps import Source, SweepRunner, SweepStore
from service.sweeps.snapshot import SnapshotInfo, Snapshots
from service.sweeps.store import RunMode
from tests.sweeps.conftest import AS_OF, TRIAL, sweep_settings

FHIR = "http://fhir.test/fhir"
NOW = dt.datetime.now(dt.UTC)


def completed_fhir_run(runner: SweepRunner, transaction_time: dt.datetime) -> int:
    run_id = runner.begin(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    runner.store.complete(
        run_id,
        counts={"patients": 0},
        attrition={},
        problems=[],
        transaction_time=transaction_time,
        mode=RunMode("full"),
    )
    return run_id


def snapshot_of(root: Path, run_id: int, **changes: object) -> Snapshots:
    snapshots = Snapshots(root, TRIAL, "key")
    builder = snapshots.start(run_id)
    info = SnapshotInfo(run_id, "key", NOW, NOW, 0)
    builder.finish(dataclasses.replace(info, **changes))  # type: ignore[arg-type]
    snapshots.promote(run_id)
    return snapshots


@pytest.fixture
def fhir_runner(tmp_path: Path) -> SweepRunner:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    return SweepRunner(sweep_settings(url, fhir_base_url=FHIR), SweepStore(url))


def base_for(runner: SweepRunner, snapshots: Snapshots, *, full: bool = False) -> str:
    run_id = runner.begin(TRIAL, AS_OF, Source.fhir(FHIR), "test", full=full)
    try:
        found, why = runner._base(runner.store.get(run_id), snapshots)
    finally:
        runner.store.finish(run_id, "cancelled", "test")
    assert (found is None) == bool(why)
    return why


def test_the_snapshot_of_the_last_completed_run_is_used(
    fhir_runner: SweepRunner, tmp_path: Path
) -> None:
    earlier = completed_fhir_run(fhir_runner, NOW)
    assert base_for(fhir_runner, snapshot_of(tmp_path / "s", earlier)) == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"transaction_time": NOW - dt.timedelta(hours=1)}, "does not match its run"),
        ({"reusable": False}, "could not identify"),
        ({"full_export_time": NOW - dt.timedelta(days=8)}, "last full export is 8 days old"),
    ],
)
def test_a_snapshot_that_cannot_be_trusted_means_a_full_export(
    fhir_runner: SweepRunner, tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    earlier = completed_fhir_run(fhir_runner, NOW)
    assert reason in base_for(fhir_runner, snapshot_of(tmp_path / "s", earlier, **change))


def test_a_full_run_when_asked_or_configured(fhir_runner: SweepRunner, tmp_path: Path) -> None:
    snapshots = snapshot_of(tmp_path / "s", completed_fhir_run(fhir_runner, NOW))
    assert base_for(fhir_runner, snapshots, full=True) == "full export requested"
    fhir_runner.settings = fhir_runner.settings.model_copy(update={"sweep_incremental": False})
    assert "incremental sweeps are off" in base_for(fhir_runner, snapshots)
    fhir_runner.settings = fhir_runner.settings.model_copy(
        update={"sweep_incremental": True, "sweep_export_level": "group"}
    )
    assert "Group-level exports are always full" in base_for(fhir_runner, snapshots)


def test_no_snapshot_or_a_vanished_run_means_a_full_export(
    fhir_runner: SweepRunner, tmp_path: Path
) -> None:
    assert "no snapshot" in base_for(fhir_runner, Snapshots(tmp_path / "s", TRIAL, "key"))
    assert "is gone" in base_for(fhir_runner, snapshot_of(tmp_path / "t", 999))


def test_snapshots_live_beside_a_sqlite_database_unless_configured(tmp_path: Path) -> None:
    assert Settings(database_url=f"sqlite:///{tmp_path}/x.db").snapshot_root() == (
        tmp_path / "x.db.snapshots"
    )
    assert Settings(database_url="postgresql://h/db").snapshot_root() == Path(
        "cohort-match-snapshots"
    )
    assert Settings(sweep_snapshot_dir=tmp_path / "s").snapshot_root() == tmp_path / "s"


FILES = f"{FHIR}/bulk-files"
PATIENT = b'{"resourceType":"Patient","id":"p1","birthDate":"1990-01-01","gender":"female"}\n'


def mock_export_server(delta: httpx.Response | None = None) -> respx.Route:
    """A server with $export and no type history: kick-offs without `_since` get job
    `full`, those with it job `delta` (whose manifest has an unreadable `deleted` file), or
    `delta` itself when given. Returns the kick-off route."""

    def manifest(job: str) -> dict[str, object]:
        body: dict[str, object] = {
            "transactionTime": NOW.isoformat(),
            "request": f"{FHIR}/$export",
            "requiresAccessToken": False,
            "output": [{"type": "Patient", "url": f"{FILES}/{job}/Patient.ndjson"}],
            "error": [],
        }
        if job == "delta":
            body["deleted"] = [{"type": "Bundle", "url": f"{FILES}/{job}/deleted.ndjson"}]
        return body

    def kick_off(request: httpx.Request) -> httpx.Response:
        if "_since" in request.url.params and delta is not None:
            return delta
        job = "delta" if "_since" in request.url.params else "full"
        return httpx.Response(202, headers={"Content-Location": f"{FHIR}/bulk-status/{job}"})

    capability = {
        "resourceType": "CapabilityStatement",
        "rest": [{"operation": [{"name": "export"}]}],
    }
    respx.get(f"{FHIR}/metadata").respond(json=capability)
    for job in ("full", "delta"):
        respx.get(f"{FHIR}/bulk-status/{job}").respond(json=manifest(job))
        respx.delete(f"{FHIR}/bulk-status/{job}").respond(202)
        respx.get(f"{FILES}/{job}/Patient.ndjson").respond(content=PATIENT)
    respx.get(f"{FILES}/delta/deleted.ndjson").respond(content=b"{not a bundle\n")
    return respx.get(f"{FHIR}/$export").mock(side_effect=kick_off)


@respx.mock
def test_an_unreadable_deletion_list_turns_the_run_into_a_full_export(
    fhir_runner: SweepRunner,
) -> None:
    kicks = mock_export_server()
    first = fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    assert first.status == "completed", first.error
    second = fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    assert second.status == "completed", second.error
    assert second.mode == "full"
    reason = (second.changes or {})["reason"]
    assert reason == "the server's list of deleted resources was unreadable"
    assert ["_since" in call.request.url.params for call in kicks.calls] == [False, True, False]
    assert second.counts["patients"] == 1


@respx.mock
def test_a_server_that_refuses_since_gets_a_full_export(fhir_runner: SweepRunner) -> None:
    refusal = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "_since"}],
    }
    kicks = mock_export_server(httpx.Response(400, json=refusal))
    assert fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test").status == "completed"
    second = fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    assert second.status == "completed", second.error
    assert second.mode == "full"
    assert "refused the incremental request" in (second.changes or {})["reason"]
    assert ["_since" in call.request.url.params for call in kicks.calls] == [False, True, False]


def mock_history_server(history_total: int) -> respx.Route:
    """A server with $export and Patient history whose history since the last run holds
    `history_total` versions (and no deletion). Returns the kick-off route."""

    def manifest(job: str) -> dict[str, object]:
        return {
            "transactionTime": NOW.isoformat(),
            "request": f"{FHIR}/$export",
            "requiresAccessToken": False,
            "output": [{"type": "Patient", "url": f"{FILES}/{job}/Patient.ndjson"}],
            "error": [],
        }

    def kick_off(request: httpx.Request) -> httpx.Response:
        job = "delta" if "_since" in request.url.params else "full"
        return httpx.Response(202, headers={"Content-Location": f"{FHIR}/bulk-status/{job}"})

    capability = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "operation": [{"name": "export"}],
                "resource": [{"type": "Patient", "interaction": [{"code": "history-type"}]}],
            }
        ],
    }
    respx.get(f"{FHIR}/metadata").respond(json=capability)
    for job in ("full", "delta"):
        respx.get(f"{FHIR}/bulk-status/{job}").respond(json=manifest(job))
        respx.delete(f"{FHIR}/bulk-status/{job}").respond(202)
        respx.get(f"{FILES}/{job}/Patient.ndjson").respond(content=PATIENT)
    respx.get(f"{FHIR}/Patient/_history").respond(
        json={"resourceType": "Bundle", "type": "history", "total": history_total}
    )
    return respx.get(f"{FHIR}/$export").mock(side_effect=kick_off)


@respx.mock
@pytest.mark.parametrize(("history_total", "mode"), [(1, "incremental"), (2, "full")])
def test_a_history_bigger_than_the_snapshot_gets_a_full_export(
    fhir_runner: SweepRunner, history_total: int, mode: str
) -> None:
    kicks = mock_history_server(history_total)
    first = fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    assert first.status == "completed", first.error
    second = fhir_runner.sweep(TRIAL, AS_OF, Source.fhir(FHIR), "test")
    assert second.status == "completed", second.error
    assert second.mode == mode  # the snapshot holds one record
    if mode == "full":
        reason = (second.changes or {})["reason"]
        assert reason.startswith("the server's history holds 2 changes since run")
        assert "more than the 1 records of its snapshot" in reason
        # one full export instead of the incremental one, not one after it
        assert ["_since" in call.request.url.params for call in kicks.calls] == [False, False]
    else:
        assert ["_since" in call.request.url.params for call in kicks.calls] == [False, True]
    assert second.counts["patients"] == 1
