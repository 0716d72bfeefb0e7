"""Whether a running run is abandoned: pure, no database, the clock frozen at a non-UTC offset."""

from __future__ import annotations

import dataclasses
import datetime as dt

from service.sweeps.liveness import abandoned_reason, heartbeat_expired
from service.sweeps.records import RunInfo

HERE, ELSEWHERE = "node-a", "node-b"
HEARTBEAT = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
# 17:00 at +09:00 is 08:00 UTC: `now` is given in another zone than the heartbeat.
TOKYO = dt.timezone(dt.timedelta(hours=9))
STALE_AFTER_S = 120.0


def at(seconds_after_heartbeat: float) -> dt.datetime:
    return (HEARTBEAT + dt.timedelta(seconds=seconds_after_heartbeat)).astimezone(TOKYO)


RUN = RunInfo(
    id=1,
    trial_id="NCT06946485",
    trial_version="1",
    terminology_version="t",
    as_of=dt.date(2026, 11, 20),
    source_kind="files",
    source="/data",
    status="running",
    requested_by="test",
    started_at=HEARTBEAT,
    ended_at=None,
    heartbeat_at=HEARTBEAT,
    pid=4242,
    host=HERE,
    cancel_requested=False,
    stage="screen",
    done=0,
    total=0,
    stored=0,
    counts={},
    transaction_time=None,
    criteria=[],
    attrition=None,
    problems=[],
    error=None,
    write_back=None,
    results_purged=False,
)


def alive(_pid: int) -> bool:
    return True


def gone(_pid: int) -> bool:
    return False


def test_a_local_run_whose_process_lives_and_beats_is_alive() -> None:
    assert abandoned_reason(RUN, at(5), STALE_AFTER_S, HERE, alive=alive) is None


def test_a_local_run_whose_process_is_gone_is_abandoned_at_once() -> None:
    assert abandoned_reason(RUN, at(1), STALE_AFTER_S, HERE, alive=gone) == (
        "abandoned: process 4242 on node-a is gone"
    )


def test_a_remote_runs_pid_is_not_looked_up_here() -> None:
    remote = dataclasses.replace(RUN, host=ELSEWHERE)
    assert abandoned_reason(remote, at(5), STALE_AFTER_S, HERE, alive=gone) is None


def test_a_run_silent_for_longer_than_stale_after_is_abandoned_on_any_host() -> None:
    remote = dataclasses.replace(RUN, host=ELSEWHERE)
    assert abandoned_reason(remote, at(121), STALE_AFTER_S, HERE, alive=alive) == (
        "abandoned: no heartbeat from process 4242 on node-b for 121 s "
        "(since 2026-11-20 08:00:00 UTC)"
    )


def test_a_heartbeat_exactly_stale_after_ago_has_not_expired() -> None:
    assert not heartbeat_expired(RUN, at(STALE_AFTER_S), STALE_AFTER_S)
    assert abandoned_reason(RUN, at(STALE_AFTER_S), STALE_AFTER_S, HERE, alive=alive) is None


def test_a_heartbeat_just_past_stale_after_has_expired() -> None:
    assert heartbeat_expired(RUN, at(STALE_AFTER_S + 0.001), STALE_AFTER_S)
