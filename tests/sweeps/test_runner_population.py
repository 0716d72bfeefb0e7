"""The pure choice between a full and an incremental export (service/sweeps/population.py):
one test per reason a run exports in full, and the one case it does not."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from service.sweeps.population import incremental_base
from service.sweeps.snapshot import SnapshotInfo

# A non-UTC offset on purpose: the age of a snapshot must not depend on the zone.
ZONE = dt.timezone(dt.timedelta(hours=-5))
NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=ZONE)
SYNCED = dt.datetime(2026, 11, 19, 8, 0, tzinfo=dt.UTC)
INFO = SnapshotInfo(7, "key", SYNCED, SYNCED - dt.timedelta(days=3), 120)
LATEST = (Path("/snapshots/run-7"), INFO)


@dataclass(frozen=True)
class Earlier:
    """The fields of the snapshot's run the choice reads (a RunInfo has many more)."""

    status: str = "completed"
    transaction_time: dt.datetime | None = SYNCED


def choose(**changes: Any) -> tuple[tuple[Path, SnapshotInfo] | None, str]:
    inputs: dict[str, Any] = {
        "requested_mode": "auto",
        "incremental": True,
        "export_level": "system",
        "latest": LATEST,
        "earlier": Earlier(),
        "now": NOW,
        "full_after_days": 30.0,
        **changes,
    }
    return incremental_base(**inputs)


def test_a_usable_snapshot_is_the_base() -> None:
    assert choose() == (LATEST, "")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"requested_mode": "full"}, "full export requested"),
        ({"incremental": False}, "incremental sweeps are off (COHORT_MATCH_SWEEP_INCREMENTAL)"),
        ({"export_level": "group"}, "Group-level exports are always full"),
        (
            {"latest": None},
            "no snapshot of an earlier run with this source, trial and code tables",
        ),
        ({"earlier": None}, "the run of the snapshot (7) is gone"),
        ({"earlier": Earlier(status="failed")}, "the snapshot of run 7 does not match its run"),
        (
            {"earlier": Earlier(transaction_time=SYNCED - dt.timedelta(hours=1))},
            "the snapshot of run 7 does not match its run",
        ),
        (
            {"latest": (LATEST[0], replace(INFO, reusable=False))},
            "run 7 received records it could not identify",
        ),
        (
            {"full_after_days": 2.5},
            "the last full export is 4 days old (COHORT_MATCH_SWEEP_FULL_AFTER_DAYS=2.5)",
        ),
    ],
    ids=[
        "requested",
        "off",
        "group",
        "no-snapshot",
        "run-gone",
        "run-not-completed",
        "run-other-time",
        "unidentified-records",
        "too-old",
    ],
)
def test_each_reason_for_a_full_export(changes: dict[str, Any], reason: str) -> None:
    assert choose(**changes) == (None, reason)


def test_the_age_limit_is_exclusive() -> None:
    exactly = NOW - INFO.full_export_time
    days = exactly / dt.timedelta(days=1)
    assert choose(full_after_days=days) == (LATEST, "")
    assert choose(full_after_days=days - 0.001)[0] is None
