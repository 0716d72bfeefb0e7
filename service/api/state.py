"""What the API holds for its lifetime, built once from Settings in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

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

__all__ = ["AppState", "State", "build_state"]


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

    async def aclose(self) -> None:
        if self.fhir is not None:
            await self.fhir.aclose()
        if self.tx is not None:
            await self.tx.aclose()
        self.audit.close()


def build_state(settings: Settings) -> AppState:
    terms = Terminology.load(settings.terminology_dir, settings.site_code_map)
    terms.warm_up()  # parse the UCUM units now, not in the first request
    trials = {trial_id: trial for trial_id, (trial, _) in list_trials(settings.trials_dir).items()}
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
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.cohort
    return state


State = Annotated[AppState, Depends(_state)]
