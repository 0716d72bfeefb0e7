"""One clock: "today" is the date in the configured zone, for every channel.

`COHORT_MATCH_SWEEP_TIMEZONE` (an IANA zone; default the host's) decides when a day begins for
cron schedules and for every `as_of` a caller leaves out: /match, /candidates, CDS Hooks, the
pages, sweeps and the CLI. A site in Nanjing whose host runs on UTC screens as of the Nanjing
date, not the date eight hours earlier.

The API holds one `Clock` in its state (service/app_state.py); tests give it a fixed `now`
instead of patching the modules that ask for the date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal import get_localzone

from service.config import Settings

__all__ = ["Clock", "today", "zone"]


def zone(settings: Settings) -> dt.tzinfo:
    """The configured zone; ValueError naming the setting when it is unknown."""
    if settings.sweep_timezone is None:
        return get_localzone()
    try:
        return ZoneInfo(settings.sweep_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"COHORT_MATCH_SWEEP_TIMEZONE: unknown time zone {settings.sweep_timezone!r}"
        ) from None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Clock:
    """The present (`now`, an aware datetime) and the zone whose date is "today"."""

    zone: dt.tzinfo
    now: Callable[[], dt.datetime] = field(default=_utc_now)

    @classmethod
    def of(cls, settings: Settings, now: Callable[[], dt.datetime] | None = None) -> Clock:
        return cls(zone(settings), now or _utc_now)

    def today(self) -> dt.date:
        return self.now().astimezone(self.zone).date()


def today(settings: Settings, now: dt.datetime | None = None) -> dt.date:
    """The date in the configured zone at `now` (an aware datetime; default the present)."""
    moment = now if now is not None else _utc_now()
    return moment.astimezone(zone(settings)).date()
