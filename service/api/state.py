"""What the API holds for its lifetime, built once from Settings in the lifespan."""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from service.audit import AuditStore
from service.config import Settings
from service.criteria.model import TrialDefinition, check_valuesets
from service.fhir import FetchPlan, FhirClient, plan_for
from service.fhir.auth import auth_from_settings
from service.security import TokenValidator
from service.terminology import Terminology
from service.trials import list_trials
from service.vocab.fhir_tx import TerminologyServer
from service.vocab.runtime import RuntimeTerminology

__all__ = ["AppState", "OffLoopJsonRoute", "State", "build_state"]

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    trials: dict[str, TrialDefinition]
    plans: dict[str, FetchPlan]
    terms: Terminology
    fhir: FhirClient | None
    validator: TokenValidator | None
    audit: AuditStore
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

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the CPU threads (with the caller's context: request id in logs)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu, partial(context.run, fn, *args))

    async def aclose(self) -> None:
        if self.fhir is not None:
            await self.fhir.aclose()
        if self.tx is not None:
            await self.tx.aclose()
        self.audit.close()
        self.cpu.shutdown(wait=False, cancel_futures=True)


def build_state(
    settings: Settings,
    *,
    terms: Terminology | None = None,
    trials: dict[str, TrialDefinition] | None = None,
) -> AppState:
    """The state for `settings`. `terms` and `trials`, when given, must be what
    settings.terminology_dir (with site_code_map) and settings.trials_dir hold: the tests load
    them once per run and build a fresh state (database, clients) around them for each app."""
    if terms is None:
        terms = Terminology.load(settings.terminology_dir, settings.site_code_map)
    terms.warm_up()  # parse the UCUM units now, not in the first request
    if trials is None:
        trials = {t_id: trial for t_id, (trial, _) in list_trials(settings.trials_dir).items()}
    for trial in trials.values():
        check_valuesets(trial, frozenset(terms.valuesets))
    validator = None
    if not settings.auth_disabled:
        if not (settings.auth_jwks_file and settings.auth_issuer and settings.auth_audience):
            raise ValueError(
                "API authentication needs COHORT_MATCH_AUTH_JWKS_FILE, COHORT_MATCH_AUTH_ISSUER "
                "and COHORT_MATCH_AUTH_AUDIENCE (or COHORT_MATCH_AUTH_DISABLED=true on loopback)"
            )
        validator = TokenValidator.from_jwks_file(
            settings.auth_jwks_file, issuer=settings.auth_issuer, audience=settings.auth_audience
        )
    fhir = None
    if settings.fhir_base_url:
        fhir = FhirClient(
            settings.fhir_base_url,
            auth=auth_from_settings(settings),
            timeout_s=settings.fhir_timeout_s,
            page_size=settings.fhir_page_size,
        )
    tx = None
    if settings.terminology_url:
        server = TerminologyServer.connect(
            settings.terminology_url, timeout_s=settings.terminology_timeout_s
        )
        tx = RuntimeTerminology(server, terms)
    return AppState(
        tx=tx,
        settings=settings,
        trials=trials,
        plans={trial_id: plan_for(trial, terms) for trial_id, trial in trials.items()},
        terms=terms,
        fhir=fhir,
        validator=validator,
        audit=AuditStore(settings.database_url),
        cpu=ThreadPoolExecutor(settings.cpu_threads, thread_name_prefix="cpu"),
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.cohort
    return state


State = Annotated[AppState, Depends(_state)]


class _OffLoopJsonRequest(Request):
    """A request whose JSON body is parsed on the CPU threads (orjson: a 16 MB Bundle parses
    in a fraction of the time `json` takes, and a C parser holds the GIL while it runs)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            state: AppState = self.app.state.cohort
            self._json = await state.off_loop(_parse_json, body)
        return self._json


def _parse_json(body: bytes) -> Any:
    """orjson, falling back to `json` for what only it reads (NaN, integers past 64 bits), so
    what a body means does not change; the fallback's error is the one FastAPI reports."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class OffLoopJsonRoute(APIRoute):
    """Routes that take large JSON bodies: the body is parsed off the event loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OffLoopJsonRequest(request.scope, request.receive))

        return route
