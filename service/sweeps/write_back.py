"""Write-back and read-back: cohort-match's ResearchSubjects on the configured FHIR server.
Off by default (COHORT_MATCH_SWEEP_WRITE_BACK). Every write is one transaction through the
FHIR client (`FhirClient.transaction`: sent once, never retried, a write whose answer was
lost may have been applied).

- `write_back`: after a completed run. First the read-back: the trial's ResearchSubjects
  are read from the server, and a status the EHR changed becomes a decision by `ehr`
  (service/worklist/research_subject.read_back; audited, then recorded); a changed status no
  decision state reads is reported in the run's write-back outcome and left as it is. Then
  the run's Bundle (ResearchStudy, candidates Group, ResearchSubjects) with the decisions
  applied (`write_plan`: an open decision's ResearchSubject gets the decision's status when
  the EHR does not show it yet, which retries a failed decision write-back, and never the
  engine's `candidate` or `ineligible`). What was written is remembered
  (service/worklist/subjects.py). A read that fails writes nothing: without it, an EHR
  change could be overwritten unseen.
- `write_decision`: one patient's ResearchSubject with their new decision's status, as a
  decision is recorded (the API and the pages, service/api/decisions.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine

from service.audit import AuditRecord, AuditStore
from service.clock import Clock
from service.config import Settings
from service.errors import FhirError, FhirFatalError
from service.fhir import FhirClient
from service.sweeps.report import diff_runs, fhir_bundle, transaction
from service.sweeps.store import RunInfo, SweepStore
from service.upstream import fhir_auth
from service.worklist.model import Screened
from service.worklist.research_subject import (
    EHR,
    Plan,
    ReadBack,
    StatusMap,
    Unmapped,
    read_back,
    research_study,
    research_subject,
    status_map,
    study_id,
    write_plan,
)
from service.worklist.store import DecisionStore
from service.worklist.subjects import Source, SubjectStore

__all__ = ["READ_BACK_ACTION", "Worklist", "write_back", "write_decision"]

log = logging.getLogger(__name__)
READ_BACK_ACTION = "decision.read_back"  # the audit action of decisions read back
REPORTED = 10  # unmapped statuses named in the outcome; the rest are counted


@dataclass(frozen=True)
class Worklist:
    """What write-back and read-back need besides the run: the decisions, what is known of
    each ResearchSubject, the status mapping, the audit trail and the clock."""

    decisions: DecisionStore
    subjects: SubjectStore
    audit: AuditStore
    clock: Clock
    statuses: StatusMap = field(default_factory=status_map)

    @classmethod
    def on(cls, engine: Engine, clock: Clock) -> Worklist:
        """The stores on a process's shared engine (the sweep store's)."""
        return cls(DecisionStore(engine), SubjectStore(engine), AuditStore(engine), clock)


async def write_decision(
    client: FhirClient, trial_id: str, title: str | None, patient: str, status: str
) -> None:
    """The patient's ResearchSubject for the trial with `status`, and the ResearchStudy it
    refers to (the same resource a sweep writes, so a server that checks references finds
    it), as one transaction, sent once. FhirError says why it failed."""
    await client.transaction(
        transaction([research_study(trial_id, title), research_subject(trial_id, patient, status)])
    )


async def _study_subjects(client: FhirClient, trial_id: str) -> list[dict[str, Any]]:
    """The ResearchSubjects of the trial's ResearchStudy: `ResearchSubject?study=`, or every
    ResearchSubject where the server refuses that search (read_back keeps the study's).

    Vendor note: sekmet-fhir 0.1.1 indexes no ResearchSubject search parameter and answers
    `study=` with 400 not-supported (strict handling): the type is read whole."""
    study = f"ResearchStudy/{study_id(trial_id)}"
    if client.searchable("ResearchSubject", "study"):
        try:
            return await client.search_all("ResearchSubject", {"study": study})
        except FhirFatalError as exc:
            if not client.refused("ResearchSubject", "study", exc):
                raise
    return await client.search_all("ResearchSubject", {})


def _failure(exc: FhirError, base: str, doing: str) -> FhirError:
    """The error as the run records it: what the server answered to what (its status)."""
    if exc.http_status is None:
        return exc
    return type(exc)(
        f"the FHIR server answered {exc.http_status} to {doing}: {exc.detail or exc.message}",
        url=base,
        http_status=exc.http_status,
        outcome=exc.outcome,
    )


def _record_read_back(worklist: Worklist, store: SweepStore, run: RunInfo, back: ReadBack) -> None:
    """The decisions read back, once their audit row is in (as every decision), each with
    its basis (the patient's result in the trial's latest sweep: this run)."""
    if not back.decisions:
        return
    worklist.audit.record(
        AuditRecord(
            request_id=f"sweep-{run.id}",
            subject=EHR,
            client_id=None,
            action=READ_BACK_ACTION,
            trial_id=run.trial_id,
            patients=[d.patient for d in back.decisions],
            outcome=f"recorded {len(back.decisions)} read back",
        )
    )
    for decision in back.decisions:
        found = store.latest_result(run.trial_id, decision.patient)
        basis = None if found is None else Screened(found.status, found.verdicts)
        worklist.decisions.record(replace(decision, basis=basis))


def _reported(decisions: int, unmapped: list[Unmapped]) -> str:
    """The read-back's part of the run's write-back outcome (references only)."""
    parts = []
    if decisions:
        parts.append(f"{decisions} decision(s) read back from the EHR")
    if unmapped:
        named = ", ".join(f"{u.resource} status {u.status}" for u in unmapped[:REPORTED])
        more = f" and {len(unmapped) - REPORTED} more" if len(unmapped) > REPORTED else ""
        parts.append(
            f"{len(unmapped)} status(es) changed in the EHR that no decision state reads, left "
            f"as they are: {named}{more}"
        )
    return "".join(f"; {part}" for part in parts)


async def _read_back(
    client: FhirClient, worklist: Worklist, store: SweepStore, run: RunInfo
) -> ReadBack:
    """The read-back step: the EHR's changes recorded as decisions (audited first), the
    statuses that agree or were the sweep's own remembered."""
    try:
        found = await _study_subjects(client, run.trial_id)
    except FhirError as exc:
        raise _failure(exc, client.base_url, "reading the ResearchSubjects back") from exc
    now = worklist.clock.now()
    back = read_back(
        found,
        run.trial_id,
        worklist.subjects.known(run.trial_id),
        worklist.decisions.by_patient(run.trial_id),
        worklist.statuses,
        now,
    )
    _record_read_back(worklist, store, run, back)
    sources: dict[str, Source] = {
        **dict.fromkeys(back.adopted, "sweep"),
        **dict.fromkeys(back.seen, "ehr"),
    }
    worklist.subjects.statuses(run.trial_id, back.adopted | back.seen, sources, now)
    if back.unmapped:
        log.warning(
            "sweep run %d: %d ResearchSubject(s) left as the EHR has them",
            run.id,
            len(back.unmapped),
        )
    return back


def _plan(worklist: Worklist, store: SweepStore, run: RunInfo, back: ReadBack) -> Plan:
    """What the run writes: its candidates, the patients it dropped (candidates in the
    previous completed run, ineligible now), the decisions the EHR does not show yet."""
    dropped: list[str] = []
    previous = store.previous_completed(run)
    if previous is not None and previous.has_results:
        diff = diff_runs(store, previous, run)
        dropped = [c.patient for c in diff.dropped if c.after == "ineligible"]
    return write_plan(
        [c.patient for c in store.summaries(run.id, candidates_only=True)],
        dropped,
        worklist.decisions.by_patient(run.trial_id),
        worklist.subjects.known(run.trial_id),
        worklist.statuses,
        worklist.clock.today(),
        leave={u.patient for u in back.unmapped},
    )


async def write_back(
    settings: Settings, store: SweepStore, run: RunInfo, title: str, worklist: Worklist
) -> str:
    """Read back, then write the run's ResearchSubjects (module docstring); the outcome as
    the run records it. FhirError when the server refused the read or the write."""
    base = settings.fhir_base_url
    assert base is not None
    async with FhirClient(
        base, auth=fhir_auth(settings, base), timeout_s=settings.fhir_timeout_s
    ) as client:
        back = await _read_back(client, worklist, store, run)
        plan = _plan(worklist, store, run, back)
        bundle = fhir_bundle(store, run, title=title, subjects=plan.statuses)
        retried = {patient: d.id for patient, d in plan.decided.items() if d.id is not None}
        try:
            await client.transaction(bundle)
        except FhirError as exc:
            failure = _failure(exc, base, "the write-back")
            worklist.subjects.failed_again(run.trial_id, retried, failure.message)
            raise failure from exc
    source: dict[str, Source] = {
        patient: "decision" if patient in plan.decided else "sweep" for patient in plan.statuses
    }
    worklist.subjects.statuses(run.trial_id, plan.statuses, source, worklist.clock.now(), retried)
    return f"ok: {len(bundle['entry'])} resources written to {base}" + _reported(
        len(back.decisions), back.unmapped
    )
