"""FHIR server access: the async client, its auth, and per-patient fetches."""

from service.fhir.auth import Auth, NoAuth, SmartBackendAuth, StaticBearer
from service.fhir.client import FhirClient, RetryPolicy
from service.fhir.patient import FetchPlan, PatientFetch, fetch_patient, plan_for

__all__ = [
    "Auth",
    "FetchPlan",
    "FhirClient",
    "NoAuth",
    "PatientFetch",
    "RetryPolicy",
    "SmartBackendAuth",
    "StaticBearer",
    "fetch_patient",
    "plan_for",
]
