"""Write-back: a completed run's ResearchSubjects to the configured FHIR server, as one
transaction through the FHIR client (sent once, never retried). Off by default
(COHORT_MATCH_SWEEP_WRITE_BACK)."""

from __future__ import annotations

from service.config import Settings
from service.errors import FhirError
from service.fhir import FhirClient
from service.sweeps.report import diff_runs, fhir_bundle
from service.sweeps.store import RunInfo, SweepStore
from service.upstream import fhir_auth

__all__ = ["write_back"]


async def write_back(settings: Settings, store: SweepStore, run: RunInfo, title: str) -> str:
    """POST the run's FHIR transaction Bundle to the configured FHIR server, once (through
    `FhirClient.transaction`, which never retries a write); patients who were candidates
    in the previous completed run and are ineligible now get their ResearchSubject set to
    `ineligible`."""
    base = settings.fhir_base_url
    assert base is not None
    dropped: list[str] = []
    previous = store.previous_completed(run)
    if previous is not None and previous.has_results:
        diff = diff_runs(store, previous, run)
        dropped = [c.patient for c in diff.dropped if c.after == "ineligible"]
    bundle = fhir_bundle(store, run, title=title, dropped=dropped)
    async with FhirClient(
        base, auth=fhir_auth(settings, base), timeout_s=settings.fhir_timeout_s
    ) as client:
        try:
            await client.transaction(bundle)
        except FhirError as exc:
            if exc.http_status is None:
                raise
            raise type(exc)(
                f"the FHIR server answered {exc.http_status} to the write-back: {exc.detail}",
                url=base,
                http_status=exc.http_status,
                outcome=exc.outcome,
            ) from exc
    return f"ok: {len(bundle['entry'])} resources written to {base}"
