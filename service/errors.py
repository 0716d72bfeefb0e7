"""One exception tree for the whole service. `ServiceError` and below are rendered once as a
FHIR OperationOutcome by the API (`status`, `code`); the other branches are handled where they
are raised. Every exception class defined under service/ is here (tests/test_errors.py checks
both that and this drawing).

    CohortMatchError                         the root
     ├── ServiceError                         reported to the caller
     │    ├── BadRequest                400   the caller sent something we cannot use
     │    │    └── Unprocessable        422   well formed, but it cannot be answered (as_of
     │    │                                   before the patient's birth)
     │    ├── NotFound                  404   unknown trial, patient or run
     │    ├── PayloadTooLarge           413   request body over the configured limit
     │    ├── Unauthorized              401   no or invalid bearer token
     │    ├── Forbidden                 403   valid token without the needed scope
     │    ├── NotConfigured             503   the request needs something this deployment lacks
     │    ├── AuditUnavailable                the audit trail cannot be written (audit.py)
     │    ├── CdsDataUnavailable              prefetch and fetch both missing (cds/prefetch.py)
     │    ├── SweepConflict                   a live sweep of the trial runs (sweeps/store.py)
     │    │    └── RunNotReady                the run has no results to show yet
     │    ├── RunLost                         the run is no longer ours (sweeps/store.py)
     │    ├── SmartError                      SMART App Launch (smart/errors.py)
     │    │    ├── LaunchRefused
     │    │    ├── StateInvalid
     │    │    ├── AuthorizationDenied
     │    │    └── EhrUnavailable
     │    └── FhirError                       the FHIR server did not give us what we asked for
     │         ├── FhirTemporaryError   504   timeouts, 429/502/503/504 after retries
     │         │    └── BulkExportTimeout     an export still running after its poll limit
     │         └── FhirFatalError       502   not worth retrying
     │              ├── FhirAuthError         401/403 from the FHIR server (or its token
     │              │                         endpoint)
     │              ├── FhirNotFound          404/410 from the FHIR server
     │              │    └── BulkFileGone     an export file gone again after a second export
     │              ├── FhirMalformedResponse not JSON, not FHIR, a truncated page
     │              ├── FhirUnsafeLink        a link to another host, or a loop
     │              ├── BulkExportUnsupported no $export at this level
     │              └── BulkExportFailed      kick-off refused, or the job failed
     ├── DataError (ValueError)               a file, record or value we cannot use
     │    ├── TrialError                      a trial file (criteria/model.py)
     │    ├── TerminologyError                the code tables (terminology.py)
     │    ├── MappingError                    a FHIR record (mappers/common.py)
     │    ├── UnitError                       a unit UCUM cannot convert (units.py)
     │    ├── DefinitionError                 a value-set definition (vocab/definition.py)
     │    ├── CodeSystemsError                the code-system table (vocab/systems.py)
     │    ├── EclUnsupported                  ECL we do not evaluate (vocab/ecl.py)
     │    ├── InvalidFhirId                   text that is no FHIR id (fhir/ids.py)
     │    └── StatusMapError                  the decision state <-> ResearchSubject.status
     │                                        mapping (worklist/research_subject.py)
     ├── TrialNotFound (LookupError)          no trial file of that id (trials.py)
     ├── PageError                            a refusal shown as a page (api/pages.py)
     └── ControlFlow                          unwinds work inside one module, never escapes
          ├── Cancelled                       a sweep asked to stop (sweeps/heartbeat.py)
          ├── Gone                            an export file 404/410 (fhir/bulk/download.py)
          └── _Unanswered                     the terminology server gave no answer
                                              (vocab/runtime.py)

A `FhirError` during a patient fetch is never a verdict: the records it concerns become
Problems and the criteria that would have relied on them `unknown`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "BulkExportFailed",
    "BulkExportTimeout",
    "BulkExportUnsupported",
    "BulkFileGone",
    "CohortMatchError",
    "ControlFlow",
    "DataError",
    "FhirAuthError",
    "FhirError",
    "FhirFatalError",
    "FhirMalformedResponse",
    "FhirNotFound",
    "FhirTemporaryError",
    "FhirUnsafeLink",
    "Forbidden",
    "NotConfigured",
    "NotFound",
    "PayloadTooLarge",
    "ServiceError",
    "Unauthorized",
    "Unprocessable",
]


class CohortMatchError(Exception):
    """The root: every exception class cohort-match defines derives from it."""


class ServiceError(CohortMatchError):
    """Base of every error the service reports; `status` and `code` shape the response."""

    status = 500
    code = "exception"  # FHIR issue-type code

    def __init__(self, message: str, *, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome  # an OperationOutcome received from upstream, if any


class BadRequest(ServiceError):
    status = 400
    code = "invalid"


class Unprocessable(BadRequest):
    status = 422


class NotFound(ServiceError):
    status = 404
    code = "not-found"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "too-costly"


class Unauthorized(ServiceError):
    status = 401
    code = "login"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotConfigured(ServiceError):
    status = 503
    code = "not-supported"


class FhirError(ServiceError):
    status = 502
    code = "transient"

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        http_status: int | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, outcome=outcome)
        self.url = url
        self.http_status = http_status
        self.detail = ""  # what the server said (its OperationOutcome's text), when known


class FhirTemporaryError(FhirError):
    status = 504
    code = "timeout"


class FhirFatalError(FhirError):
    status = 502
    code = "exception"


class FhirAuthError(FhirFatalError):
    code = "security"


class FhirNotFound(FhirFatalError):
    code = "not-found"


class FhirMalformedResponse(FhirFatalError):
    code = "structure"


class FhirUnsafeLink(FhirFatalError):
    code = "security"


class BulkExportUnsupported(FhirFatalError):
    """A Bulk Data kick-off was answered 404/405/501: no $export here."""

    code = "not-supported"


class BulkExportFailed(FhirFatalError):
    """The server refused the kick-off or reported the job failed; `url` is the job."""

    code = "exception"


class BulkExportTimeout(FhirTemporaryError):
    """The job was still running after `poll_limit_s`; it has been cancelled."""


class BulkFileGone(FhirNotFound):
    """An output file was gone (404/410) in two exports in a row."""


class DataError(CohortMatchError, ValueError):
    """A file, record or value that cannot be used; handled where it is read (a ValueError,
    as before the tree)."""


class ControlFlow(CohortMatchError):
    """Raised and caught inside one module to unwind work; never reaches a caller."""
