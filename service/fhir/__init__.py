"""FHIR server access: HTTP and FHIR only (no trials, mappers or settings).

    FhirClient      search, read, batch, transaction over one pool (client.py)
    send            the one retry helper every request goes through (transport.py)
    Auth ...        credentials as httpx.Auth flows, bound to the server's host (auth.py)
    fetch_records   one patient's resources for a FetchPlan (patient.py, plan.py)
    bulk            Bulk Data $export to NDJSON, or searches (bulk/)
    history         what was deleted since a moment (history.py)

Planning what to fetch for a trial and mapping resources to facts live above the client, in
service/fetching.py; credentials from Settings in service/upstream.py.
"""

from service.fhir.auth import Auth, HostBound, NoAuth, SmartBackendAuth, StaticBearer
from service.fhir.client import FhirClient
from service.fhir.patient import PatientRecords, fetch_records
from service.fhir.plan import FetchPlan
from service.fhir.transport import Retry, RetryPolicy, send

__all__ = [
    "Auth",
    "FetchPlan",
    "FhirClient",
    "HostBound",
    "NoAuth",
    "PatientRecords",
    "Retry",
    "RetryPolicy",
    "SmartBackendAuth",
    "StaticBearer",
    "fetch_records",
    "send",
]
