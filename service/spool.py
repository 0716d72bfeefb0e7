"""Spool directories of population screens and the worker processes that fill them.

A spool holds per-patient partitions and full results (lab values included) while a screen or
sweep runs. The policy:
- created under `COHORT_MATCH_SPOOL_DIR` (default: the system temp directory), owner-only
  (0700, as `mkdtemp` makes it), named `cohort-match-<kind>-<pid>-<random>` so the process
  it belongs to is in its name;
- removed when the run ends, completed or failed (the owner's `TemporaryDirectory`);
- a spool whose process is gone (SIGKILL leaves it behind) is removed by the next sweep and
  by `serve` at start (`remove_stale`);
- worker processes exit when the process that started them dies (`exit_with_parent`), so a
  killed sweep leaves no workers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["exit_with_parent", "new_spool", "remove_stale", "spool_root"]

log = logging.getLogger(__name__)

PREFIX = "cohort-match-"
_NAME = re.compile(rf"^{PREFIX}(?P<kind>[a-z]+)-(?P<pid>\d+)-")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 1.0


def spool_root(configured: Path | None) -> Path:
    """Where spools go: the configured directory (made 0700 if it does not exist), else the
    system temp directory."""
    if configured is None:
        return Path(tempfile.gettempdir())
    configured.mkdir(mode=0o700, parents=True, exist_ok=True)
    return configured


def new_spool(root: Path, kind: str) -> tempfile.TemporaryDirectory[str]:
    """A fresh owner-only spool under `root`, named with this process's id."""
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{kind}-{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


def remove_stale(root: Path) -> int:
    """Remove the spools under `root` whose process is gone; returns how many.

    Only our own directories (owned by this user, named by `new_spool`) are touched. A pid the
    system has reused for another process keeps its spool until that process ends too."""
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for path in entries:
        match = _NAME.match(path.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            if _alive(int(match["pid"])):
                continue
            shutil.rmtree(path)
            removed += 1
    if removed:
        log.info("removed %d stale spool director(ies) under %s", removed, root)
    return removed


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this process when `parent` dies.

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), checked against a parent that died before the
    call. Elsewhere (or if prctl fails): a daemon thread polling `os.getppid()` every second.
    """
    if sys.platform.startswith("linux") and _pdeathsig():
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return
    threading.Thread(target=_watch, args=(parent,), name="exit-with-parent", daemon=True).start()


def _pdeathsig() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)
