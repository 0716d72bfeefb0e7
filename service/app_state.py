"""The API's one application state, built once in `create_app`'s lifespan (the composition root).

`build_state(settings)` makes everything the routers use, in one place:

    settings, trials + fetch plans, code tables, terminology server, clock, CPU threads
                                        (ScreenContext, service/context.py)
    fhir        the FHIR client factory (service/fhir_clients.py)
    validator   bearer JWT validation (None with COHORT_MATCH_AUTH_DISABLED)
    engine      the one database engine every store shares (service/db/engine.py)
    audit       the audit store
    smart       the SMART launch flow and page sessions (service/smart/runtime.py)
    cds         the CDS Hooks runtime (service/cds/runtime.py)
    sweeps      background sweeps and their store; `scheduler` runs the schedule
    decisions   the coordinator's decisions (service/worklist/store.py)
    subjects    what is known of each ResearchSubject cohort-match writes (worklist/subjects.py)
    statuses    decision state <-> ResearchSubject.status, the reviewed CSV
                (service/worklist/research_subject.py), loaded and checked at start

Nothing is built later or on first use. Tests hand `build_state` (or `create_app`) a clock,
an HTTP transport for every FHIR client, or a sweep exporter instead of patching classes.
Routers read the state through the `State` dependency (service/api/state.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.engine import Engine

from service.audit import AuditStore
from service.cds.runtime import CdsRuntime
from service.cds.store import CdsStore
from service.clock import Clock
from service.config import Settings
from service.context import ScreenContext, load_context
from service.criteria.model import TrialDefinition
from service.db import create_engine
from service.fhir_clients import FhirClients
from service.security import TokenValidator
from service.smart import SessionStore, SmartRuntime
from service.sweeps.background import BackgroundSweeps
from service.sweeps.population import Exporter
from service.sweeps.scheduler import SweepScheduler
from service.sweeps.store import SweepStore
from service.sweeps.write_back import Worklist
from service.terminology import Terminology
from service.worklist.research_subject import StatusMap, status_map
from service.worklist.store import DecisionStore
from service.worklist.subjects import SubjectStore

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["AppState", "build_state", "state_of"]


@dataclass(kw_only=True)
class AppState(ScreenContext):
    fhir: FhirClients
    validator: TokenValidator | None
    engine: Engine
    audit: AuditStore
    smart: SmartRuntime
    cds: CdsRuntime
    sweeps: BackgroundSweeps
    scheduler: SweepScheduler
    decisions: DecisionStore
    subjects: SubjectStore
    statuses: StatusMap

    def start(self) -> None:
        """What runs in the event loop: the sweep schedule."""
        self.scheduler.start()

    async def aclose(self) -> None:
        """Stop the schedule, ask running sweeps to stop and wait for them, close clients and
        stores."""
        self.scheduler.shutdown()
        await asyncio.to_thread(self.sweeps.close)
        await self.smart.aclose()
        await self.fhir.aclose()
        self.audit.close()
        self.engine.dispose()
        await super().aclose()


def _validator(settings: Settings) -> TokenValidator | None:
    if settings.auth_disabled:
        return None
    if not (settings.auth_jwks_file and settings.auth_issuer and settings.auth_audience):
        raise ValueError(
            "API authentication needs COHORT_MATCH_AUTH_JWKS_FILE, COHORT_MATCH_AUTH_ISSUER "
            "and COHORT_MATCH_AUTH_AUDIENCE (or COHORT_MATCH_AUTH_DISABLED=true on loopback)"
        )
    return TokenValidator.from_jwks_file(
        settings.auth_jwks_file, issuer=settings.auth_issuer, audience=settings.auth_audience
    )


def build_state(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    exporter: Exporter | None = None,
    terms: Terminology | None = None,
    trials: dict[str, TrialDefinition] | None = None,
) -> AppState:
    """Everything the API holds for its lifetime (blocking: it loads the code tables and
    migrates the stores). `clock`, `transport` (every FHIR client's) and `exporter` (sweeps'
    Bulk export) replace the real ones, and `terms`/`trials` are the already loaded code
    tables and trial files of `settings`, for tests."""
    context = load_context(settings, clock, terms=terms, trials=trials)
    validator = _validator(settings)
    # The stores: built here and nowhere else, on one engine (one pool, one migration).
    engine = create_engine(settings.database_url)
    try:
        audit = AuditStore(engine)
        sessions = SessionStore(engine, clock=lambda: context.clock.now().timestamp())
        cds_store = CdsStore(engine)
        decisions = DecisionStore(engine)
        subjects = SubjectStore(engine)
        statuses = status_map()  # the reviewed CSV, validated at start
        worklist = Worklist(decisions, subjects, audit, context.clock, statuses)
        sweeps = BackgroundSweeps(settings, SweepStore(engine), exporter, worklist)
    except BaseException:
        engine.dispose()
        context.cpu.shutdown(wait=False)
        raise
    try:
        scheduler = SweepScheduler(settings, sweeps, context.trials, context.clock)
        fhir = FhirClients(settings, transport=transport)
        smart = SmartRuntime(settings, sessions, fhir, clock=sessions.clock)
        cds = CdsRuntime.build(context, fhir, cds_store)
    except BaseException:
        sweeps.close()
        audit.close()
        engine.dispose()
        context.cpu.shutdown(wait=False)
        raise
    return AppState(
        **vars(context),
        fhir=fhir,
        validator=validator,
        engine=engine,
        audit=audit,
        smart=smart,
        cds=cds,
        sweeps=sweeps,
        scheduler=scheduler,
        decisions=decisions,
        subjects=subjects,
        statuses=statuses,
    )


def state_of(app: FastAPI) -> AppState:
    """The state `create_app`'s lifespan built (typed access for the routers and tests)."""
    state: AppState = app.state.cohort
    return state
