"""Secrets in query strings never reach the access log (service/logs.py)."""

from __future__ import annotations

import logging

import pytest

from service.config import Settings
from service.logs import RedactSecrets, redact_query
from service.main import create_app


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/callback?code=abc123&state=s-9", "/callback?code=REDACTED&state=REDACTED"),
        ("/app/patient?ticket=t-1&trial=NCT1", "/app/patient?ticket=REDACTED&trial=NCT1"),
        ("/launch?iss=https://ehr/fhir&launch=xyz", "/launch?iss=https://ehr/fhir&launch=REDACTED"),
        ("/x?ACCESS_TOKEN=secret", "/x?ACCESS_TOKEN=REDACTED"),
        ("/trials?as_of=2026-11-20", "/trials?as_of=2026-11-20"),
        ("/healthz", "/healthz"),
    ],
)
def test_redact_query(path: str, expected: str) -> None:
    assert redact_query(path) == expected


def test_uvicorn_access_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    create_app(Settings(auth_disabled=True, host="127.0.0.1"))  # installs the filter
    access = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, RedactSecrets) for f in access.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/callback?code=SECRET-CODE&state=SECRET-STATE",
            "1.1",
            302,
        )
    assert "SECRET" not in caplog.text
    assert "/callback?code=REDACTED&state=REDACTED" in caplog.text
