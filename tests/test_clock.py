"""One clock: "today" is the date in COHORT_MATCH_SWEEP_TIMEZONE (service/clock.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from service.clock import today, zone
from service.config import Settings

# 20:30 UTC on 19 November is already 20 November in Nanjing (UTC+8), still the 19th in Chicago.
LATE_EVENING_UTC = dt.datetime(2026, 11, 19, 20, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        ("Asia/Shanghai", dt.date(2026, 11, 20)),
        ("America/Chicago", dt.date(2026, 11, 19)),
        ("UTC", dt.date(2026, 11, 19)),
    ],
)
def test_today_is_the_date_in_the_configured_zone(timezone: str, expected: dt.date) -> None:
    assert today(Settings(sweep_timezone=timezone), LATE_EVENING_UTC) == expected


def test_an_unknown_zone_names_the_setting() -> None:
    with pytest.raises(ValueError, match="COHORT_MATCH_SWEEP_TIMEZONE"):
        zone(Settings(sweep_timezone="Mars/Olympus_Mons"))


def test_the_api_uses_the_clock_when_as_of_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.api.match as match_module

    asked: list[Settings] = []

    def frozen(settings: Settings, now: dt.datetime | None = None) -> dt.date:
        asked.append(settings)
        return today(settings, LATE_EVENING_UTC)

    monkeypatch.setattr(match_module, "today", frozen)
    from fastapi.testclient import TestClient

    from tests.conftest import app_for

    settings = Settings(auth_disabled=True, host="127.0.0.1", sweep_timezone="Asia/Shanghai")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "c1",
                    "gender": "female",
                    "birthDate": "1990-01-01",
                }
            }
        ],
    }
    with TestClient(app_for(settings)) as client:
        response = client.post("/trials/NCT06946485/match", json=bundle)
    assert response.status_code == 200, response.text
    assert response.json()["as_of"] == "2026-11-20"
    assert asked
