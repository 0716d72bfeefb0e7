"""Sweeps started by the API or the schedule: claimed in the caller (a conflict is an
immediate 409) and executed on a thread of this process."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from service.config import Settings
from service.errors import BadRequest
from service.sweeps.population import Exporter
from service.sweeps.runner import SweepRunner
from service.sweeps.source import Source, configured_source
from service.sweeps.store import RunInfo, SweepStore
from service.sweeps.write_back import Worklist

__all__ = ["BACKGROUND_THREADS", "BackgroundSweeps"]

log = logging.getLogger("service.sweeps.runner")
BACKGROUND_THREADS = 4  # sweeps of different trials at once, per process


class BackgroundSweeps:
    """Sweeps started by the API or the schedule: claimed in the caller, executed on a thread
    of this process. `close()` asks running sweeps to stop and waits for them."""

    def __init__(
        self,
        settings: Settings,
        store: SweepStore | None = None,
        exporter: Exporter | None = None,
        worklist: Worklist | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or SweepStore(settings.database_url)
        self.runner = SweepRunner(settings, self.store, exporter, worklist=worklist)
        self._pool = ThreadPoolExecutor(BACKGROUND_THREADS, thread_name_prefix="sweep")
        self._active: dict[int, tuple[threading.Event, Future[RunInfo]]] = {}
        self._lock = threading.Lock()

    def source(self) -> Source:
        source = configured_source(self.settings)
        if source is None:
            raise BadRequest(
                "no sweep source configured: set COHORT_MATCH_SWEEP_DATA_DIR or "
                "COHORT_MATCH_FHIR_BASE_URL"
            )
        return source

    def start(
        self, trial_id: str, as_of: dt.date, requested_by: str, *, full: bool = False
    ) -> RunInfo:
        run_id = self.runner.begin(trial_id, as_of, self.source(), requested_by, full=full)
        cancel = threading.Event()
        with self._lock:
            future = self._pool.submit(self._execute, run_id, cancel)
            self._active[run_id] = (cancel, future)
        return self.store.get(run_id)

    def _execute(self, run_id: int, cancel: threading.Event) -> RunInfo:
        try:
            return self.runner.execute(run_id, cancel=cancel)
        except Exception:
            log.exception("sweep run %d: could not be ended cleanly", run_id)
            raise
        finally:
            with self._lock:
                self._active.pop(run_id, None)

    def cancel(self, run_id: int) -> RunInfo:
        run = self.store.request_cancel(run_id)
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:
            active[0].set()  # at once here; another process's sweep sees it at its heartbeat
        return run

    def wait(self, run_id: int, timeout: float | None = None) -> RunInfo:
        """Wait for a sweep started here to end (tests, shutdown)."""
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:
            active[1].result(timeout)
        return self.store.get(run_id)

    def close(self) -> None:
        with self._lock:
            for cancel, _ in self._active.values():
                cancel.set()
        self._pool.shutdown(wait=True)
        self.store.close()
