"""Whether a `running` run is still alive: pure given the time, the host and a process check.

A run is taken for dead (abandoned) when
- it runs on this host and its process is gone (`process_alive`, the only part that looks at
  the system), or
- its heartbeat is older than `stale_after_s`, on any host (strictly older: a heartbeat
  exactly `stale_after_s` ago is still alive).
The next claim of the trial marks such a run failed (service/sweeps/store.py).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from pathlib import Path

from service.sweeps.records import RunInfo

__all__ = ["abandoned_reason", "heartbeat_expired", "process_alive"]


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process on this host (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # Linux: a killed child not yet reaped by its parent still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def heartbeat_expired(run: RunInfo, now: dt.datetime, stale_after_s: float) -> bool:
    """Whether the run has been silent for more than `stale_after_s`."""
    return (now - run.heartbeat_at).total_seconds() > stale_after_s


def abandoned_reason(
    run: RunInfo,
    now: dt.datetime,
    stale_after_s: float,
    host: str | None = None,
    *,
    alive: Callable[[int], bool] = process_alive,
) -> str | None:
    """Why a `running` run is taken for dead, or None while it may still be alive.

    `host`: this host's name (default: the system's); `alive`: whether a pid of this host
    is a live process."""
    host = host or socket.gethostname()
    if run.host == host and not alive(run.pid):
        return f"abandoned: process {run.pid} on {run.host} is gone"
    if heartbeat_expired(run, now, stale_after_s):
        silent = (now - run.heartbeat_at).total_seconds()
        return (
            f"abandoned: no heartbeat from process {run.pid} on {run.host} "
            f"for {silent:.0f} s (since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
    return None
