"""One clock: "today" is the date in COHORT_MATCH_SWEEP_TIMEZONE (service/clock.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.clock import Clock, today, zone
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


def test_a_clock_tells_today_in_its_zone_at_its_now() -> None:
    clock = Clock.of(Settings(sweep_timezone="Asia/Shanghai"), lambda: LATE_EVENING_UTC)
    assert clock.today() == dt.date(2026, 11, 20)
    assert Clock(ZoneInfo("America/Chicago"), lambda: LATE_EVENING_UTC).today() == dt.date(
        2026, 11, 19
    )


def test_the_api_uses_its_clock_when_as_of_is_left_out(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.conftest import app_for

    settings = Settings(
        auth_disabled=True,
        host="127.0.0.1",
        sweep_timezone="Asia/Shanghai",
        database_url=f"sqlite:///{tmp_path / 'app.db'}",  # not the checkout's database
    )
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
    asked: list[dt.datetime] = []

    def now() -> dt.datetime:
        asked.append(LATE_EVENING_UTC)
        return LATE_EVENING_UTC

    clock = Clock.of(settings, now)
    with TestClient(app_for(settings, clock=clock)) as client:
        response = client.post("/trials/NCT06946485/match", json=bundle)
    assert response.status_code == 200, response.text
    assert response.json()["as_of"] == "2026-11-20"  # Nanjing's date, whatever the host's
    assert asked
