"""CDS Hooks 2.0 for the trials served: prefetch templates, cards, client JWTs, feedback.

The HTTP endpoints are in service/api/cds_hooks.py; this package holds what they are made of:

    models     the specification's JSON shapes (requests, cards, discovery, feedback)
    prefetch   templates from a trial's FetchPlan; prefetch + FHIR searches -> PatientFacts
    cards      a PatientResult -> a card (none for an ineligible patient); pure
    auth       the CDS client's signed JWT (Trusting CDS Clients), with replay protection
    store      cards issued and feedback received (SQLAlchemy, the audit database)
"""

from service.cds.auth import CdsClient, CdsClientValidator
from service.cds.cards import card_for
from service.cds.models import AS_OF_EXTENSION, CardPublic, CdsResponsePublic, HookRequest
from service.cds.prefetch import (
    CdsDataUnavailable,
    PrefetchQuery,
    gather,
    prefetch_queries,
    read_prefetch,
)
from service.cds.store import CdsStore, IssuedCard

__all__ = [
    "AS_OF_EXTENSION",
    "CardPublic",
    "CdsClient",
    "CdsClientValidator",
    "CdsDataUnavailable",
    "CdsResponsePublic",
    "CdsStore",
    "HookRequest",
    "IssuedCard",
    "PrefetchQuery",
    "card_for",
    "gather",
    "prefetch_queries",
    "read_prefetch",
]
