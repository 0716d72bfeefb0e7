"""FHIR Bulk Data export ($export, Bulk Data Access IG v2) to NDJSON files, or searches.

    export(client, out_dir, ExportRequest.of([...], level="system"))  -> ExportResult
    search_to_ndjson(client, out_dir, plan)                            -> ExportResult
    export_or_search(client, out_dir, plan)                            -> ExportResult (either way)

Both ways write the same layout and nothing else: `<Type>-<n>.ndjson` in `out_dir` (n counts
from 1 per type), one resource a line, so `service.screening.screen(out_dir, ...)` reads the
result of either identically. `ExportResult.transaction_time` is what to pass as `since` next
time for an incremental run.

Flow (IG v2, "Bulk Data Export Operation Request Flow"): kick-off (GET with query parameters,
or POST with a Parameters resource) carrying `Prefer: respond-async` -> 202 + Content-Location
(the job's status URL) -> poll until 200 + manifest -> stream each output file to disk ->
read the error files -> DELETE the job, which tells the server it may free the files.
Requests go through the FhirClient: its connection pool, its host-bound credentials, its
host check (`FhirClient.trusted`) and its one retry helper.

What happens on each fault, by design:

    kick-off 404/405/501        BulkExportUnsupported. `export_or_search` then searches instead,
                                unless the CapabilityStatement declared $export: then the 404
                                means what it says (e.g. an unknown Group) and is raised.
    kick-off 429/502/503/504,   retried by the one retry helper (service/fhir/transport.py)
      network errors            with `BulkPolicy.retry`, honouring Retry-After.
    kick-off other 4xx/5xx      BulkExportFailed with the server's OperationOutcome text.
    status or file URL on       FhirUnsafeLink before anything is sent there (our token would
      another host              go with it). `allow_hosts` admits a separate file server
                                explicitly: the client's rule for next links.
    poll 202                    wait for Retry-After (seconds or HTTP date) clamped to
                                [min_delay_s, max_delay_s]; without one, exponential backoff
                                from first_delay_s (the IG asks clients to back off). X-Progress
                                goes to the `progress` callback.
    poll 429                    the job is kept: wait as for 202, poll again.
    poll 5xx, network errors    retried up to `transient_retries` times in a row; a 5xx whose
                                OperationOutcome carries a non-transient issue code (the IG's
                                example: `processing`) means the job failed: at once.
    poll other 4xx / 5xx        BulkExportFailed naming the job URL, with the OperationOutcome.
    poll 404/410                BulkExportFailed: the job is gone (cancelled, expired).
    401/403 anywhere            FhirAuthError naming the URL (a token problem, not the job).
    poll_limit_s exceeded       the job is DELETEd; BulkExportTimeout names it and its last
                                X-Progress. The limit applies to each job's polling.
    any failure or cancel       the job is DELETEd (best effort) and the files this call wrote
      after the kick-off        are removed: `out_dir` never holds a partial export.
    download 429/5xx, network   the file is fetched again from its start (the retry helper,
      error, truncated stream   `BulkPolicy.retry`); it is written as `.<name>.part` and
                                renamed only when complete, so a half file never looks like
                                data.
    download 404/410            the files were expired or cleaned up (`Expires` passed, or the
                                server restarted): the files of this run are removed and the
                                whole export is kicked off once more. Not just that file: the
                                files of one export are one snapshot at its transactionTime,
                                and mixing two snapshots would make `since` next time wrong.
                                Gone again in the second export: BulkFileGone naming the file.
    error files in manifest     downloaded and every OperationOutcome issue in them returned in
                                ExportResult.issues (first MAX_ISSUES_KEPT, all counted) and
                                logged. They are not kept in `out_dir`, which holds data only.
                                The export still succeeds (the IG's "partial success"); a
                                caller must look at `result.errors` before treating the data as
                                complete: absent records are no evidence of absence there.
    count != lines received     an issue (`error` when fewer lines than the manifest's count).
    `deleted` in manifest       read (Bundles of DELETE entries, IG v2, filled when `_since` is
                                given): ExportResult.deleted lists `Type/id`, for an incremental
                                sweep to remove from its snapshot. An unreadable line is an
                                issue and counted in `deleted_unreadable`: the caller cannot
                                know what it named (a sweep then exports in full).
    auth                        status polls always carry the client's Authorization; file
                                downloads only when the manifest says `requiresAccessToken`
                                (a pre-signed file URL must not receive our token). Redirects
                                are not followed (the client's pool is built that way).

`_typeFilter` is off by default: it is optional for servers and experimental in the IG, and
sekmet-fhir 0.1.1 gets it wrong (below). Without it an export carries every Observation, more
than the trial reads, but never less. `observation_type_filters(plan)` builds the IG's form
(one filter per code, ORed) for servers known to implement it.

Its errors are in the one tree (service/errors.py): BulkExportUnsupported, BulkExportFailed,
BulkFileGone (FhirNotFound) and BulkExportTimeout (FhirTemporaryError).

The package, along its seams:

    request.py    what a kick-off asks for (levels, _type, _since, _typeFilter); pure
    manifest.py   the completed job's manifest and the lines of its error/deleted files; pure
    results.py    ExportResult, ExportFile, ExportIssue, ExportProgress, BulkPolicy
    session.py    one export's view of the FhirClient (credentials, host check, retries)
    job.py        kick-off, polling until the manifest
    download.py   streaming the files to disk, reading error and deleted files
    search.py     the search fallback, same layout
    export.py     export(), offers_export(), export_or_search()

Vendor notes, sekmet-fhir 0.1.1 (the test server): system, Patient and Group $export work and
need `Prefer: respond-async` (400 without it); 202 + Content-Location `{base}/bulk-status/{id}`;
polls give 202 + `X-Progress` + `Retry-After: 1`; file URLs are absolute; downloads need the
token when auth is on. `_typeFilter` values are split at commas and several filters for one
type are ANDed, so neither `Observation?code=a,b` nor the IG's one-filter-per-code form
works there. `_since` is compared with `meta.lastUpdated` as a string, so we send UTC
instants with milliseconds and `Z`, its own format. Patient/Group exports leave out
ResearchSubject (not in its Patient compartment) and Medication (no patient's, though the IG
lets a server add referenced ones): `export_or_search` reads planned types missing from a
Patient/Group export by search (every Medication: medication records name them by
reference; `plan_types` asks for them whenever medication records are planned). With
enforced SMART scopes it maps methods to scope letters: a POST kick-off needs `c` and DELETE
on the status URL `d`, so with `system/*.rs` use GET (the default) and expect the clean-up
DELETE to be refused (logged, harmless: the files stay until the server restarts).
"""

from __future__ import annotations

from service.errors import (
    BulkExportFailed,
    BulkExportTimeout,
    BulkExportUnsupported,
    BulkFileGone,
)
from service.fhir.bulk.download import LineCounter
from service.fhir.bulk.export import export, export_or_search, offers_export
from service.fhir.bulk.request import (
    ExportRequest,
    fhir_instant,
    observation_type_filters,
    plan_types,
)
from service.fhir.bulk.results import (
    BulkPolicy,
    ExportFile,
    ExportIssue,
    ExportProgress,
    ExportResult,
)
from service.fhir.bulk.search import search_to_ndjson
from service.fhir.responses import retry_after_s

_LineCounter = LineCounter  # the name tests/fhir/test_bulk.py has always imported

__all__ = [
    "BulkExportFailed",
    "BulkExportTimeout",
    "BulkExportUnsupported",
    "BulkFileGone",
    "BulkPolicy",
    "ExportFile",
    "ExportIssue",
    "ExportProgress",
    "ExportRequest",
    "ExportResult",
    "export",
    "export_or_search",
    "fhir_instant",
    "observation_type_filters",
    "offers_export",
    "plan_types",
    "retry_after_s",
    "search_to_ndjson",
]
