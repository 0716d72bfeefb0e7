"""SMART fixtures: a running test EHR over the demo data, the app that trusts it, and
`launch(...)`, which drives the browser's part of a launch through both with plain HTTP.

The EHR (tests/smart/ehr.py) runs on 127.0.0.1 in a thread and serves FHIR from
tests/api/conftest.FakeFhir in-process, so these tests need no FHIR server; the same flow
against the real one is in tests/integration/test_smart_launch.py and, in Chromium, in
tests/browser/.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from service.clock import Clock
from service.config import Settings
from service.screening import screen
from tests.api.conftest import DEMO, FakeFhir
from tests.conftest import ROOT, TRIAL_PATH, app_for
from tests.smart.ehr import TestEhr

AS_OF = "2026-11-20"  # the demo population is anchored here
SMALL_PATIENTS = 12
APP = "http://127.0.0.1:8000"  # loopback: the session cookie is not Secure, so httpx sends it


@lru_cache(maxsize=1)
def file_verdicts() -> dict[str, dict[str, str]]:
    """Patient reference -> criterion id -> verdict, screening the demo files as of AS_OF."""
    run = screen(ROOT / "demo", TRIAL_PATH, ROOT / "terminology", date.fromisoformat(AS_OF))
    try:
        return {
            r["patient"]["reference"]: {c["id"]: c["verdict"] for c in r["criteria"]}
            for r in run.results()
        }
    finally:
        run.close()


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """p01-p12 of the demo: every status, both unit systems; the whole demo (66 patients)
    goes through the real FHIR server in tests/integration and tests/browser."""
    folder = tmp_path_factory.mktemp("small-demo")
    for path in sorted(DEMO.glob("p*.json")):
        if int(path.name[1:3]) <= SMALL_PATIENTS:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def fake(small_demo: Path) -> FakeFhir:
    """The FHIR data behind the test EHR (the small demo); `fake.faults` injects failures."""
    fake = FakeFhir()
    fake.resources = [
        entry["resource"]
        for path in sorted(small_demo.glob("*.json"))
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]
    ]
    return fake


@pytest.fixture
def ehr(fake: FakeFhir) -> Iterator[TestEhr]:
    with TestEhr(fake.handle).running() as running:
        yield running


@pytest.fixture
def make_settings(tmp_path: Path, ehr: TestEhr) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_disabled": True,
            "smart_issuers": ehr.iss,
            "database_url": f"sqlite:///{tmp_path / 'app.db'}",
            "fhir_timeout_s": 5,
            # the pages open with the trial these tests read (two are served)
            "smart_trial": "NCT06946485",
        }
        values.update(overrides)
        return Settings(**values)

    return make


class MovingClock:
    """The app's clock (service/clock.py), which a test moves forward to expire things."""

    def __init__(self) -> None:
        self.ahead = dt.timedelta(0)
        self.clock = Clock(dt.UTC, self.now)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += dt.timedelta(seconds=seconds)


@pytest.fixture
def moving_clock() -> MovingClock:
    return MovingClock()


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], moving_clock: MovingClock
) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(base_url: str = APP, **overrides: Any) -> TestClient:
        app = app_for(make_settings(**overrides), clock=moving_clock.clock)
        client = TestClient(app, base_url=base_url)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def app(make_app: Callable[..., TestClient]) -> TestClient:
    return make_app()


@dataclass
class Flow:
    """What one launch went through, for assertions."""

    authorize_url: str
    callback_url: str
    callback: httpx.Response
    page: httpx.Response | None

    def authorize_params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.authorize_url).query).items()}


def launch(
    app: TestClient,
    ehr: TestEhr,
    *,
    patient: str | None = "p02",
    target: str | None = None,
    follow: bool = True,
) -> Flow:
    """EHR launch (patient given) or standalone launch (patient None), up to the first page.

    The app's redirects point at the EHR (another server), so each hop is followed by hand.
    """
    params: dict[str, str] = {"iss": ehr.iss}
    if patient is not None:
        params["launch"] = ehr.new_launch(patient)
    if target is not None:
        params["next"] = target
    started = app.get("/launch", params=params, follow_redirects=False)
    assert started.status_code == 302, started.text
    authorize_url = started.headers["location"]
    approved = httpx.get(authorize_url, follow_redirects=False)
    assert approved.status_code == 302, approved.text
    callback_url = approved.headers["location"]
    callback = app.get(callback_url, follow_redirects=False)
    page = None
    if follow and callback.status_code == 303:
        page = app.get(callback.headers["location"], follow_redirects=False)
    return Flow(authorize_url, callback_url, callback, page)
