"""What screening needs in a long-running process, built once from Settings.

`ScreenContext` holds the trials served with their fetch plans, the code tables, the optional
terminology server, the clock ("today" in the configured zone) and the CPU threads that parse,
map and screen off the event loop. The API's state (service/app_state.py) extends it with the
runtimes and stores; the candidates screen (service/candidates.py) and the CDS runtime
(service/cds/runtime.py) need only this part.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from service.clock import Clock
from service.config import Settings
from service.criteria.model import TrialDefinition, check_valuesets
from service.errors import NotFound, PayloadTooLarge
from service.fetching import plan_for
from service.fhir import FetchPlan
from service.terminology import Terminology
from service.trials import list_trials
from service.vocab.fhir_tx import TerminologyServer
from service.vocab.runtime import RuntimeTerminology

__all__ = ["ScreenContext", "load_context"]

T = TypeVar("T")


@dataclass(kw_only=True)
class ScreenContext:
    settings: Settings
    trials: dict[str, TrialDefinition]
    plans: dict[str, FetchPlan]
    terms: Terminology
    clock: Clock
    # the optional terminology server (COHORT_MATCH_TERMINOLOGY_URL), with its cache
    tx: RuntimeTerminology | None = None
    # Parsing, mapping and screening a request body is CPU work: it runs here, never on the
    # event loop, so /healthz and other requests keep answering while large Bundles are
    # screened. Threads, not processes: a process would need the facts and the terminology
    # pickled for every call; a thread hands the GIL back to the loop every switch interval
    # (5 ms). Measured with scripts/bench_loop.py (four 16 MB Bundles at once, 2 shared CPUs):
    # /healthz p95 4.0 s on the loop, 0.61 s with 2 threads, 0.34 s with 1 (threads add no
    # throughput under the GIL, only contention): COHORT_MATCH_CPU_THREADS defaults to 1.
    # Bounded: excess calls queue.
    cpu: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="cpu")
    )

    def trial(self, trial_id: str) -> TrialDefinition:
        """The trial served under `trial_id`; NotFound (404) otherwise."""
        trial = self.trials.get(trial_id)
        if trial is None:
            raise NotFound(f"unknown trial {trial_id!r}")
        return trial

    def check_entries(self, count: int, what: str) -> None:
        """413 for a body with more entries than COHORT_MATCH_MAX_BUNDLE_ENTRIES (mapping and
        screening grow with them; the byte limit alone lets 16 MB of tiny entries through)."""
        limit = self.settings.max_bundle_entries
        if count > limit:
            raise PayloadTooLarge(
                f"{what} has {count} entries; at most {limit} are screened "
                "(COHORT_MATCH_MAX_BUNDLE_ENTRIES)"
            )

    def today(self) -> dt.date:
        """ "today" in the configured zone (service/clock.py)."""
        return self.clock.today()

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the CPU threads (with the caller's context: request id in logs)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu, partial(context.run, fn, *args))

    async def aclose(self) -> None:
        if self.tx is not None:
            await self.tx.aclose()
        self.cpu.shutdown(wait=False, cancel_futures=True)


def load_context(
    settings: Settings,
    clock: Clock | None = None,
    *,
    terms: Terminology | None = None,
    trials: dict[str, TrialDefinition] | None = None,
) -> ScreenContext:
    """The ScreenContext of `settings`, loaded from `settings` (trials checked against the
    value sets the code tables hold; UCUM units parsed now, not in the first request).
    `terms` and `trials`, when given, must be what settings.terminology_dir (with
    site_code_map) and settings.trials_dir hold: tests load them once per process."""
    if terms is None:
        terms = Terminology.load(settings.terminology_dir, settings.site_code_map)
    terms.warm_up()
    if trials is None:
        trials = {t_id: trial for t_id, (trial, _) in list_trials(settings.trials_dir).items()}
    for trial in trials.values():
        check_valuesets(trial, frozenset(terms.valuesets))
    tx = None
    if settings.terminology_url:
        server = TerminologyServer.connect(
            settings.terminology_url, timeout_s=settings.terminology_timeout_s
        )
        tx = RuntimeTerminology(server, terms)
    return ScreenContext(
        settings=settings,
        trials=trials,
        plans={trial_id: plan_for(trial, terms) for trial_id, trial in trials.items()},
        terms=terms,
        clock=clock or Clock.of(settings),
        tx=tx,
        cpu=ThreadPoolExecutor(settings.cpu_threads, thread_name_prefix="cpu"),
    )
