"""Sweeps on a schedule, inside the API process (APScheduler 3, AsyncIOScheduler).

COHORT_MATCH_SWEEP_SCHEDULE maps trial ids to when to sweep them:

    {"NCT06946485": "0 2 * * *"}       a 5-field cron expression (minute hour day month weekday)
    {"DEMO-LN-001": "every 6h"}        an interval: every <n>s|m|h|d

Cron times are in COHORT_MATCH_SWEEP_TIMEZONE (an IANA zone; default the host's), and so is
"today", the as_of of a scheduled sweep. A schedule naming an unknown trial or an expression
that does not parse is refused at start.

Several API replicas may run the same schedule: the store's claim lets one of them sweep and
the others log that a sweep of the trial is already running. A sweep missed while the
process was down is run once when it comes back, if within an hour (misfire grace).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Iterable

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from service.clock import Clock, zone
from service.config import Settings
from service.sweeps.background import BackgroundSweeps
from service.sweeps.store import SweepConflict

__all__ = ["SweepScheduler", "schedule_timezone", "trigger_for"]

log = logging.getLogger(__name__)
INTERVAL = re.compile(r"every\s+(\d+)\s*([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MISFIRE_GRACE_S = 3600


def schedule_timezone(settings: Settings) -> dt.tzinfo:
    return zone(settings)  # the one clock's zone (service/clock.py)


def trigger_for(trial_id: str, expression: str, timezone: dt.tzinfo) -> object:
    """The APScheduler trigger for one schedule entry; ValueError naming the entry."""
    interval = INTERVAL.fullmatch(expression.strip().lower())
    if interval is not None:
        seconds = int(interval[1]) * SECONDS[interval[2]]
        if seconds < 60:
            raise ValueError(
                f"COHORT_MATCH_SWEEP_SCHEDULE[{trial_id}]: {expression!r} is under a minute"
            )
        return IntervalTrigger(seconds=seconds, timezone=timezone)
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ValueError(
            f"COHORT_MATCH_SWEEP_SCHEDULE[{trial_id}]: {expression!r} is neither a 5-field cron "
            f"expression nor 'every <n>s|m|h|d' ({exc})"
        ) from None


class SweepScheduler:
    """One job per scheduled trial; each starts a background sweep of the configured source."""

    def __init__(
        self,
        settings: Settings,
        sweeps: BackgroundSweeps,
        known_trials: Iterable[str],
        clock: Clock | None = None,
    ) -> None:
        self.sweeps = sweeps
        self.clock = clock or Clock.of(settings)
        self.timezone = self.clock.zone
        known = set(known_trials)
        self.scheduler = AsyncIOScheduler(timezone=self.timezone)
        for trial_id, expression in sorted(settings.sweep_schedule.items()):
            if trial_id not in known:
                raise ValueError(
                    f"COHORT_MATCH_SWEEP_SCHEDULE names unknown trial {trial_id!r} "
                    f"(known: {', '.join(sorted(known)) or 'none'})"
                )
            self.scheduler.add_job(
                self.run,
                trigger_for(trial_id, expression, self.timezone),
                args=[trial_id],
                id=f"sweep-{trial_id}",
                name=f"sweep {trial_id} ({expression})",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE_S,
            )
        if settings.sweep_schedule:
            sweeps.source()  # a schedule without a source is refused at start, not at 2 a.m.

    def start(self) -> None:
        """Start in the running event loop (the API's lifespan)."""
        if self.scheduler.get_jobs():
            self.scheduler.start()
            for job in self.scheduler.get_jobs():
                log.info("%s: next at %s", job.name, job.next_run_time)

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def next_runs(self) -> dict[str, dt.datetime | None]:
        return {
            job.id.removeprefix("sweep-"): job.next_run_time for job in self.scheduler.get_jobs()
        }

    async def run(self, trial_id: str) -> int | None:
        """One scheduled sweep: as of today in the schedule's zone. Returns the run id."""
        today = self.clock.today()
        try:
            run = await asyncio.to_thread(self.sweeps.start, trial_id, today, "scheduler")
        except SweepConflict as exc:
            log.warning("scheduled sweep of %s skipped: %s", trial_id, exc.message)
            return None
        except Exception:
            log.exception("scheduled sweep of %s could not start", trial_id)
            return None
        log.info("scheduled sweep of %s started: run %d", trial_id, run.id)
        return run.id
