"""Browser fixtures: Debian's Chromium driven by Playwright for Python, never a downloaded one.

`scripts/install-browser` installs /usr/bin/chromium (CI runs it); without it these tests
are skipped with that reason. Playwright is told where Chromium is (`executable_path`), so
`playwright install` is never needed. The flags are those this machine needs: no sandbox
(root), no GPU, and no background networking (the closed network refuses it).

The app and the test EHR run as real servers on 127.0.0.1 in threads; the EHR is addressed
as `localhost`, so to the browser the two are different sites, as an EHR and an app are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.conftest import app_for
from tests.integration.conftest import fhir_server  # noqa: F401 - the fixture, re-exported
from tests.smart.ehr import TestEhr
from tests.smart.server import serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    # Also to be declared in pyproject.toml; registering it here keeps --strict-markers happy.
    config.addinivalue_line("markers", "browser: drives headless Chromium (tests/browser)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # In CI scripts/check installs Chromium first: a missing browser there is a failure to
    # see, not a reason to skip.
    if CHROMIUM.exists() or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: run scripts/install-browser")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in the
    # main thread while it is open, and pytest-asyncio cannot run async tests beside it.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def ehr(fhir_server: str) -> Iterator[TestEhr]:  # noqa: F811 - the fixture above
    with TestEhr(fhir_server, interactive=True).running(host_name="localhost") as running:
        yield running


@pytest.fixture(scope="module")
def app_url(
    ehr: TestEhr,
    fhir_server: str,  # noqa: F811 - the fixture above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    database = tmp_path_factory.mktemp("browser") / "app.db"
    settings = Settings(
        auth_disabled=True,
        smart_issuers=ehr.iss,
        fhir_base_url=fhir_server,  # the API the pages are compared with
        database_url=f"sqlite:///{database}",
        smart_trial="NCT06946485",  # the trial the tests read (two are served)
    )
    with serve(app_for(settings)) as url:
        yield url


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(float(os.environ.get("BROWSER_TIMEOUT_MS", "30000")))
    page = context.new_page()
    yield page
    context.close()
