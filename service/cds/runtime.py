"""The CDS Hooks runtime: one `patient-view` service per trial, built once with the app state.

The router (service/api/cds_hooks.py) parses, authenticates through `authenticate`, audits and
renders; what a hook call does is here:

- Prefetch: a key left out is searched on the FHIR server; `null` means "no data" as the
  specification says (`COHORT_MATCH_CDS_NULL_PREFETCH=refetch` for clients that disagree);
  an incomplete Bundle (next link) is searched again. Needed data that cannot be had at all
  is 412 Precondition Failed, the specification's answer (service/cds/prefetch.py).
- `fhirServer` is only called when it is `COHORT_MATCH_FHIR_BASE_URL` or listed in
  `COHORT_MATCH_CDS_FHIR_SERVERS` (else 400, before anything is sent): a hook call must not make
  this service send requests, or tokens, to a host of the caller's choosing. With
  `fhirAuthorization` its access token is used (scoped to the EHR user, as the specification
  intends), on a client of its own for the request so that nothing read with one user's
  token is cached for another; without it, the configured server's own credentials.
- Time budget (`COHORT_MATCH_CDS_TIME_BUDGET_S`, default 4 s, counted from the request's
  arrival): when the FHIR searches have not finished by then they are abandoned and the answer
  is no card - what the EHR shows anyway when a service answers late - and the outcome says
  `timeout`. A search that fails within the budget makes its criteria `unknown`.
- Auth: every call (discovery and feedback too) carries the CDS client's signed JWT
  (service/cds/auth.py), with `aud` the URL called under `COHORT_MATCH_CDS_PUBLIC_BASE_URL`.
  `COHORT_MATCH_AUTH_DISABLED` (loopback only) turns it off with the rest of the API's auth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from service.all_trials import EveryTrial, fit_every_trial, union_plan
from service.cds.all_trials import all_trials_card
from service.cds.auth import CdsClient, CdsClientValidator
from service.cds.cards import card_for
from service.cds.models import (
    AS_OF_EXTENSION,
    CardPublic,
    CdsServicePublic,
    CdsServicesPublic,
    HookRequest,
)
from service.cds.prefetch import Gathered, PrefetchQuery, gather, prefetch_queries, read_prefetch
from service.cds.store import CdsStore, IssuedCard
from service.context import ScreenContext
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition
from service.errors import BadRequest, NotFound, Unauthorized
from service.fhir import FhirClient
from service.fhir_clients import FhirClients

__all__ = [
    "ALL_TRIALS",
    "ALL_TRIALS_SERVICE",
    "HOOK",
    "CdsRuntime",
    "FhirTarget",
    "HookAnswer",
    "service_id_for",
]

log = logging.getLogger(__name__)
HOOK = "patient-view"
# The service that screens the patient against every trial served and answers with one card
# listing those they may fit (service/cds/all_trials.py). Its cards are stored with trial "*".
ALL_TRIALS_SERVICE = "cohort-match-all-trials"
ALL_TRIALS = "*"


def service_id_for(trial_id: str) -> str:
    return f"cohort-match-{trial_id.lower()}"


def _normal(url: str) -> str:
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class FhirTarget:
    """Where missing data is searched, and with which token (None: the client's own auth)."""

    base_url: str
    token: str | None
    shared: FhirClient | None  # the service's pooled client, for its own server and credentials


@dataclass(frozen=True)
class HookAnswer:
    """What a hook call answers, what its audit row says, and the card to record (if any)."""

    cards: list[CardPublic]
    outcome: str
    issued: IssuedCard | None = None
    server_timing: str | None = None


def _description(trial: TrialDefinition) -> str:
    return (
        f"Screens the patient in view against clinical trial {trial.id} ({trial.title}) and "
        "returns one card when the record does not rule the patient out: likely eligible "
        "(every automatic criterion met) or possibly eligible (some unknown), with what is left "
        "to check and a SMART link to the full result. No card for an ineligible patient. "
        f'Request extension "{AS_OF_EXTENSION}": "YYYY-MM-DD" screens as on that date '
        "(default: today)."
    )


class CdsRuntime:
    def __init__(
        self,
        context: ScreenContext,
        fhir: FhirClients,
        store: CdsStore,
        validator: CdsClientValidator | None = None,
    ) -> None:
        settings = context.settings
        self.context = context
        self.fhir = fhir
        self.store = store
        self.validator = validator
        # service id -> trial, and each trial's prefetch keys
        self.services = {service_id_for(t.id): t for t in context.trials.values()}
        self.queries: dict[str, list[PrefetchQuery]] = {
            t: prefetch_queries(plan) for t, plan in context.plans.items()
        }
        # every trial's prefetch in one (the all-trials service): one fetch, every trial
        self.all_plan = union_plan(context.plans.values())
        self.all_queries = prefetch_queries(self.all_plan)
        servers = {_normal(s) for s in settings.cds_fhir_servers}
        if settings.fhir_base_url:
            servers.add(_normal(settings.fhir_base_url))
        self.fhir_servers = frozenset(servers)  # fhirServer values that may be called

    @classmethod
    def build(cls, context: ScreenContext, fhir: FhirClients, store: CdsStore) -> CdsRuntime:
        """With the CDS clients' keys of COHORT_MATCH_CDS_JWKS_FILE, when set."""
        settings = context.settings
        validator = None
        if settings.cds_jwks_file is not None:
            issuers = frozenset(settings.cds_client_issuers)
            validator = CdsClientValidator.from_jwks_file(settings.cds_jwks_file, issuers=issuers)
        return cls(context, fhir, store, validator)

    @property
    def launch_url(self) -> str | None:
        settings = self.context.settings
        if settings.cds_smart_launch_url:
            return settings.cds_smart_launch_url
        if settings.cds_public_base_url:
            return f"{_normal(settings.cds_public_base_url)}/launch"
        return None

    def trial(self, service_id: str) -> TrialDefinition:
        trial = self.services.get(service_id)
        if trial is None:
            raise NotFound(f"unknown CDS service {service_id!r}")
        return trial

    def authenticate(self, authorization: str, path: str, *extra: str) -> CdsClient | None:
        """The CDS client of an `Authorization` header's JWT, for `aud` {public base URL}{path}
        (or one of `extra`); None with auth disabled."""
        settings = self.context.settings
        if settings.auth_disabled:  # loopback only, enforced by Settings
            return None
        if self.validator is None or not settings.cds_public_base_url:
            raise Unauthorized(
                "CDS Hooks clients are not configured (COHORT_MATCH_CDS_JWKS_FILE, "
                "COHORT_MATCH_CDS_PUBLIC_BASE_URL)"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a CDS client JWT is required (Authorization: Bearer <JWT>)")
        base = _normal(settings.cds_public_base_url)
        return self.validator.validate(token.strip(), [base + p for p in (path, *extra)])

    def discovery(self) -> CdsServicesPublic:
        """One `patient-view` service per trial served, with its prefetch templates."""
        return CdsServicesPublic(
            services=[
                CdsServicePublic(
                    hook=HOOK,
                    title=f"Clinical trial screening: {trial.id}",
                    description=_description(trial),
                    id=service_id,
                    prefetch={q.key: q.template() for q in self.queries[trial.id]},
                    extension={
                        "org.cohort-match.trial": {"id": trial.id, "version": trial.version}
                    },
                )
                for service_id, trial in sorted(self.services.items())
            ]
            + [
                CdsServicePublic(
                    hook=HOOK,
                    title="Clinical trial screening: every trial",
                    description=(
                        "Screens the patient in view against every clinical trial served ("
                        + ", ".join(sorted(self.context.trials))
                        + ") and returns one card listing the trials the record does not rule "
                        "the patient out of, best first, each with its status and next step, "
                        "with a SMART link to each result. No card when every trial rules the "
                        f'patient out. Request extension "{AS_OF_EXTENSION}": "YYYY-MM-DD" '
                        "screens as on that date (default: today)."
                    ),
                    id=ALL_TRIALS_SERVICE,
                    prefetch={q.key: q.template() for q in self.all_queries},
                )
            ]
        )

    def fhir_target(self, payload: HookRequest) -> FhirTarget | None:
        """Where to search what was not prefetched; BadRequest for a fhirServer not allowed."""
        own = self.fhir.configured
        token = payload.fhirAuthorization.access_token if payload.fhirAuthorization else None
        if payload.fhirServer is None:
            return FhirTarget(own.base_url, None, own) if own is not None else None
        wanted = _normal(payload.fhirServer)
        if wanted not in self.fhir_servers:
            raise BadRequest(
                f"fhirServer {payload.fhirServer!r} is not a FHIR server this service may call "
                "(COHORT_MATCH_FHIR_BASE_URL, COHORT_MATCH_CDS_FHIR_SERVERS)"
            )
        configured = self.context.settings.fhir_base_url
        if token is None and own is not None and configured and wanted == _normal(configured):
            return FhirTarget(wanted, None, own)
        return FhirTarget(wanted, token, None)

    async def call(
        self, service_id: str, trial: TrialDefinition, payload: HookRequest, arrived: float
    ) -> HookAnswer:
        """Screen the patient in context: a card for a likely or possibly eligible patient,
        none for an ineligible one, none when the FHIR searches outlast the time budget
        (counted from `arrived`, a time.monotonic())."""
        context, settings = self.context, self.context.settings
        patient_id = payload.context.patientId
        prepared = await self._prepared(
            service_id, self.queries[trial.id], context.plans[trial.id].valuesets, payload, arrived
        )
        if prepared is None:
            return HookAnswer([], "timeout: no card")
        day, gathered, fetch_s = prepared
        started = time.perf_counter()
        result = await context.off_loop(
            partial(evaluate, mrn_type=settings.mrn_type), trial, gathered.facts, day, context.terms
        )
        card = card_for(result, trial, card_id=str(uuid.uuid4()), launch_url=self.launch_url)
        engine_s = time.perf_counter() - started
        log.info(
            "cds %s Patient/%s: %d keys prefetched, %d searched, %d failed: %s",
            service_id,
            patient_id,
            len(gathered.prefetched),
            len(gathered.fetched),
            len(gathered.problems),
            result.status,
        )
        timing = f"fetch;dur={fetch_s * 1000:.3f}, engine;dur={engine_s * 1000:.3f}"
        if card is None:
            return HookAnswer([], f"{result.status}: no card", server_timing=timing)
        assert card.uuid is not None
        issued = IssuedCard(
            card.uuid,
            service_id,
            payload.hookInstance,
            trial.id,
            f"Patient/{patient_id}",
            result.status,
            day,
        )
        return HookAnswer([card], f"{result.status}: card", issued, timing)

    async def _prepared(
        self,
        service_id: str,
        queries: list[PrefetchQuery],
        wanted: frozenset[str],
        payload: HookRequest,
        arrived: float,
    ) -> tuple[dt.date, Gathered, float] | None:
        """The day screened, the patient's facts (prefetch, then FHIR searches within the time
        budget) and the seconds spent fetching; None when the searches outlast the budget."""
        context, settings = self.context, self.context.settings
        patient_id = payload.context.patientId
        if payload.hook != HOOK:
            raise BadRequest(f"service {service_id} answers the {HOOK} hook, not {payload.hook!r}")
        try:
            day = payload.as_of() or context.today()
        except ValueError as exc:
            raise BadRequest(f"extension.{AS_OF_EXTENSION}: {exc}") from exc
        readings = read_prefetch(queries, payload.prefetch, patient_id, settings.cds_null_prefetch)
        context.check_entries(sum(len(r or ()) for r in readings.values()), "the prefetch")
        target = self.fhir_target(payload)
        remaining = settings.cds_time_budget_s - (time.monotonic() - arrived)
        fetch_started = time.perf_counter()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                gathered = await self._gather(wanted, queries, readings, patient_id, target)
        except TimeoutError:
            log.warning(
                "cds %s Patient/%s: FHIR searches exceeded the %.1f s budget; no card",
                service_id,
                patient_id,
                settings.cds_time_budget_s,
            )
            return None
        return day, gathered, time.perf_counter() - fetch_started

    async def call_all(self, payload: HookRequest, arrived: float) -> HookAnswer:
        """The all-trials service: the patient in context screened against every trial, one
        card listing those they may fit (service/cds/all_trials.py), none when none."""
        context = self.context
        patient_id = payload.context.patientId
        prepared = await self._prepared(
            ALL_TRIALS_SERVICE, self.all_queries, self.all_plan.valuesets, payload, arrived
        )
        if prepared is None:
            return HookAnswer([], "timeout: no card")
        day, gathered, fetch_s = prepared
        started = time.perf_counter()
        every: EveryTrial = await context.off_loop(
            partial(fit_every_trial, mrn_type=context.settings.mrn_type),
            context.trials,
            gathered.facts,
            day,
            context.terms,
        )
        card = all_trials_card(
            every, context.trials, card_id=str(uuid.uuid4()), launch_url=self.launch_url
        )
        engine_s = time.perf_counter() - started
        timing = f"fetch;dur={fetch_s * 1000:.3f}, engine;dur={engine_s * 1000:.3f}"
        statuses = ", ".join(f"{f.trial_id} {f.status}" for f in every.fits)
        if card is None:
            return HookAnswer([], f"{statuses}: no card", server_timing=timing)
        assert card.uuid is not None
        best = every.may_fit()[0]
        issued = IssuedCard(
            card.uuid,
            ALL_TRIALS_SERVICE,
            payload.hookInstance,
            ALL_TRIALS,
            f"Patient/{patient_id}",
            best.status,
            day,
        )
        return HookAnswer([card], f"{statuses}: card", issued, timing)

    async def _gather(
        self,
        wanted: frozenset[str],
        queries: list[PrefetchQuery],
        readings: dict[str, list[dict[str, Any]] | None],
        patient_id: str,
        target: FhirTarget | None,
    ) -> Gathered:
        context, settings = self.context, self.context.settings
        search = partial(
            gather,
            queries,
            readings,
            patient_id,
            context.terms,
            tx=context.tx,
            wanted=wanted,
            off_loop=context.off_loop,
        )
        needs_fhir = any(readings.get(q.key) is None for q in queries)
        if not needs_fhir or target is None or target.shared is not None:
            return await search(fhir=target.shared if target is not None else None)
        budget = min(settings.fhir_timeout_s, settings.cds_time_budget_s)
        async with self.fhir.transient(target.base_url, budget) as fhir:
            return await search(fhir=fhir, token=target.token)
