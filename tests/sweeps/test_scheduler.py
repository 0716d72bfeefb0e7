"""The schedule: parsing, refusing bad entries at start, and what a scheduled run does."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from service.config import Settings
from service.errors import BadRequest
from service.sweeps import BackgroundSweeps, SweepStore
from service.sweeps.scheduler import SweepScheduler, schedule_timezone, trigger_for
from tests.sweeps.conftest import DEMO, TRIAL

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_cron_and_interval_entries() -> None:
    cron = trigger_for(TRIAL, "0 2 * * *", SHANGHAI)
    assert isinstance(cron, CronTrigger)
    after = dt.datetime(2026, 11, 20, 3, 0, tzinfo=SHANGHAI)
    assert cron.get_next_fire_time(None, after) == dt.datetime(2026, 11, 21, 2, 0, tzinfo=SHANGHAI)
    interval = trigger_for(TRIAL, "every 6h", SHANGHAI)
    assert isinstance(interval, IntervalTrigger)
    assert interval.interval == dt.timedelta(hours=6)
    assert trigger_for(TRIAL, "Every 2 d", SHANGHAI).interval == dt.timedelta(days=2)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "neither a 5-field cron expression"),
        ("61 2 * * *", "neither a 5-field cron expression"),
        ("every 30s", "under a minute"),
        ("nightly", "neither"),
    ],
)
def test_bad_entries_are_refused_with_the_trial_named(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"COHORT_MATCH_SWEEP_SCHEDULE\[{TRIAL}\].*{message}"):
        trigger_for(TRIAL, expression, SHANGHAI)


def test_the_schedule_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORT_MATCH_SWEEP_SCHEDULE", '{"NCT06946485": "0 2 * * *"}')
    monkeypatch.setenv("COHORT_MATCH_SWEEP_TIMEZONE", "Asia/Shanghai")
    settings = Settings()
    assert settings.sweep_schedule == {TRIAL: "0 2 * * *"}
    assert schedule_timezone(settings) == SHANGHAI
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        schedule_timezone(Settings(sweep_timezone="Mars/Olympus"))


@pytest.fixture
def background(settings: Settings) -> Iterator[BackgroundSweeps]:
    sweeps = BackgroundSweeps(settings.model_copy(update={"sweep_data_dir": DEMO}))
    yield sweeps
    sweeps.close()


def test_a_schedule_naming_an_unknown_trial_or_without_a_source_is_refused(
    settings: Settings,
) -> None:
    scheduled = settings.model_copy(update={"sweep_schedule": {"NCT0": "0 2 * * *"}})
    sweeps = BackgroundSweeps(scheduled)
    try:
        with pytest.raises(ValueError, match="unknown trial 'NCT0'"):
            SweepScheduler(scheduled, sweeps, [TRIAL])
        scheduled = settings.model_copy(update={"sweep_schedule": {TRIAL: "0 2 * * *"}})
        with pytest.raises(BadRequest, match="no sweep source configured"):
            SweepScheduler(scheduled, sweeps, [TRIAL])
    finally:
        sweeps.close()


async def test_scheduler_starts_in_the_event_loop_with_its_next_runs(
    settings: Settings, background: BackgroundSweeps
) -> None:
    scheduled = settings.model_copy(
        update={"sweep_schedule": {TRIAL: "0 2 * * *"}, "sweep_timezone": "Asia/Shanghai"}
    )
    scheduler = SweepScheduler(scheduled, background, [TRIAL])
    scheduler.start()
    try:
        (when,) = scheduler.next_runs().values()
        assert when is not None
        assert (when.hour, when.minute, when.utcoffset()) == (2, 0, dt.timedelta(hours=8))
    finally:
        scheduler.shutdown()
    await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
    assert not scheduler.scheduler.running


async def test_a_scheduled_run_sweeps_today_and_skips_while_one_runs(
    settings: Settings,
    background: BackgroundSweeps,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduled = settings.model_copy(
        update={"sweep_schedule": {TRIAL: "every 1d"}, "sweep_timezone": "Asia/Shanghai"}
    )
    scheduler = SweepScheduler(scheduled, background, [TRIAL])
    release = threading.Event()
    add = SweepStore.add_results

    def held(self: SweepStore, *args: Any, **kwargs: Any) -> None:
        release.wait(30)  # the first scheduled sweep stays running until released
        add(self, *args, **kwargs)

    monkeypatch.setattr(SweepStore, "add_results", held)
    run_id = await scheduler.run(TRIAL)
    assert run_id is not None
    assert await scheduler.run(TRIAL) is None
    assert "scheduled sweep of NCT06946485 skipped: a sweep of NCT06946485 is already" in (
        caplog.text
    )
    release.set()
    finished = await asyncio.to_thread(background.wait, run_id, 60)
    assert finished.status == "completed"
    assert finished.requested_by == "scheduler"
    assert finished.as_of == dt.datetime.now(SHANGHAI).date()
