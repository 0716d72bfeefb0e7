"""A running sweep's pulse: progress kept in memory (`Tracker`, which also raises `Cancelled`
at the next step once a cancel is seen) and a thread (`Heartbeat`) writing it to the store
every COHORT_MATCH_SWEEP_HEARTBEAT_S, which picks up a cancel request or a takeover there."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.errors import ControlFlow
from service.sweeps.store import SweepStore

__all__ = ["Cancelled", "Heartbeat", "Progress", "Tracker"]

log = logging.getLogger("service.sweeps.runner")
Progress = Callable[[str, int, int], None]  # stage, done, total


class Cancelled(ControlFlow):
    """The run was asked to stop (or stopped being ours)."""


class Tracker:
    """Progress in memory (the heartbeat writes it), the caller's callback, and the cancel
    check at every step."""

    def __init__(self, progress: Progress | None, cancel: threading.Event) -> None:
        self.progress = progress
        self.cancel = cancel
        self.stage, self.done, self.total = "queued", 0, 0
        self.reason = "cancelled"

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total
        if self.progress is not None:
            self.progress(stage, done, total)
        if self.cancel.is_set():
            raise Cancelled(self.reason)


class Heartbeat(threading.Thread):
    def __init__(self, store: SweepStore, run_id: int, interval: float, tracker: Tracker) -> None:
        super().__init__(name=f"sweep-{run_id}-heartbeat", daemon=True)
        self.store, self.run_id, self.interval, self.tracker = store, run_id, interval, tracker
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            tracker = self.tracker
            try:
                state = self.store.heartbeat(
                    self.run_id, tracker.stage, tracker.done, tracker.total
                )
            except Exception as exc:  # a database hiccup must not kill the sweep
                log.warning("sweep run %d: heartbeat not written: %s", self.run_id, exc)
                continue
            if state != "running":
                tracker.reason = (
                    "cancel requested" if state == "cancel" else "run taken over as abandoned"
                )
                tracker.cancel.set()
                return

    def stop(self) -> None:
        self.halt.set()
        self.join()
