"""Sweep fixtures: a store in a fresh SQLite file, a runner, and a copy of the demo data
that a test may change (the bundled demo stays as it is)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from service.config import Settings
from service.sweeps import Source, SweepRunner, SweepStore
from service.sweeps.store import RunInfo
from tests.conftest import ROOT

DEMO = ROOT / "demo" / "NCT06946485"
AS_OF = date(2026, 11, 20)
TRIAL = "NCT06946485"


def sweep_settings(database_url: str, **overrides: object) -> Settings:
    """Fast heartbeats so tests see them; small batches so a run has several."""
    values: dict[str, object] = {
        "database_url": database_url,
        "sweep_heartbeat_s": 0.2,
        "sweep_stale_after_s": 5.0,
        "sweep_batch_size": 7,
        "sweep_workers": 1,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return sweep_settings(db_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[SweepStore]:
    store = SweepStore(settings.database_url)
    yield store
    store.close()


@pytest.fixture
def runner(settings: Settings, store: SweepStore) -> SweepRunner:
    return SweepRunner(settings, store)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    target = tmp_path / "population"
    shutil.copytree(DEMO, target)
    return target


def sweep(runner: SweepRunner, data: Path = DEMO, as_of: date = AS_OF) -> RunInfo:
    run = runner.sweep(TRIAL, as_of, Source.files(data), "test")
    assert run.status == "completed", run.error
    return run


def set_observation_value(data: Path, patient_file: str, observation: str, value: float) -> None:
    """Change one Observation's valueQuantity.value in a patient's Bundle."""
    path = next(data.glob(f"{patient_file}*.json"))
    bundle = json.loads(path.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"]["id"] == observation:
            entry["resource"]["valueQuantity"]["value"] = value
            break
    else:
        raise AssertionError(f"no {observation} in {path}")
    path.write_text(json.dumps(bundle), encoding="utf-8")


def verdicts_of(store: SweepStore, run_id: int) -> dict[str, dict[str, str]]:
    """Every patient's verdicts in a run: what two runs must agree on."""
    return {s.patient: s.verdicts for s in store.summaries(run_id)}
