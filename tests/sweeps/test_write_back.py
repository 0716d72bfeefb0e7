"""Write-back to the FHIR server (off by default), and whose credentials go where."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from service.config import Settings
from service.fhir import NoAuth, StaticBearer
from service.sweeps import SweepRunner, SweepStore
from service.sweeps.runner import fhir_auth
from tests.sweeps.conftest import sweep, sweep_settings

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
        mock.post(FHIR).mock(return_value=httpx.Response(500, text="store offline"))
        run = sweep(writing, demo_copy)
    assert run.status == "completed"
    assert run.write_back == "failed: the FHIR server answered 500 to the write-back: store offline"
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
        original.replace('version: "2026-12-02.1"', 'version: "2026-12-03.1"'), encoding="utf-8"
    )
    runner.settings = runner.settings.model_copy(update={"trials_dir": trials})
    run = runner.execute(run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert "changed to version 2026-12-03.1 after the run was started with 2026-12-02.1" in (
        run.error
    )
