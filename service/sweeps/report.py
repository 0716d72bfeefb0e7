"""What a coordinator gets from a stored run: the funnel, the diff, and the exports.

Everything streams from the store in rank (or patient) order, so memory stays flat however
large the run; only the diff's changed patients and the FHIR Bundle's candidates are held.

- Funnel (attrition): service/ranked_output.Funnel counts it (its docstring states the
  policy: only `fail` drops a patient; the deceased are `excluded` before the first step);
  here it is published as the run's `AttritionPublic`, with each step's unknown share. The
  patients remaining after the last criterion are exactly the likely + possibly eligible.
- Diff: run A (earlier) against run B (later), patient by patient, merged in patient order.
- Exports: the ranked list contract (JSON) and CSV, written by service/ranked_output.py as
  for `cohort-match screen --format json|csv`, and a FHIR R4 transaction Bundle: the
  ResearchStudy, a Group of the candidates (in rank order) and one ResearchSubject (status
  `candidate`) per candidate. A transaction with PUTs to deterministic ids
  (service/worklist/research_subject.py), so a second write-back updates rather than
  duplicates. The write-back sends this Bundle with the coordinators' decisions applied
  (service/sweeps/write_back.py): the export is the engine's view.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from service import ranked_output
from service.errors import BadRequest
from service.ranked_output import Funnel, json_chunks, rank_body
from service.schemas import TrialRefPublic
from service.sweeps.schemas import (
    AttritionPublic,
    CriterionChangePublic,
    DiffPublic,
    FetchPublic,
    FunnelStepPublic,
    PatientChangePublic,
    ProgressPublic,
    RunCountsPublic,
    RunRefPublic,
    SourcePublic,
    SweepPublic,
    VerdictCountsPublic,
    WorkerPublic,
)
from service.sweeps.store import RunInfo, StoredResult, SweepStore
from service.worklist.model import Decision, Screened, current, open_decision, returns_as_new
from service.worklist.research_subject import (
    research_study,
    research_subject,
    stable_id,
    study_id,
)

__all__ = [
    "FunnelCounter",
    "attrition",
    "csv_lines",
    "diff_runs",
    "fhir_bundle",
    "group_id",
    "ranked_json",
    "run_public",
    "study_id",
    "transaction",
    "trial_ref",
]

CANDIDATE = frozenset({"likely_eligible", "possibly_eligible"})
OUR_GROUPS = "http://cohort-match.org/fhir/sid/candidate-group"


def trial_ref(run: RunInfo) -> TrialRefPublic:
    return TrialRefPublic(
        id=run.trial_id, version=run.trial_version, terminology=run.terminology_version
    )


def run_public(run: RunInfo) -> SweepPublic:
    return SweepPublic(
        id=run.id,
        trial=trial_ref(run),
        as_of=run.as_of,
        source=SourcePublic(kind=run.source_kind, location=run.source),
        status=run.status,
        requested_by=run.requested_by,
        started_at=run.started_at,
        ended_at=run.ended_at,
        progress=ProgressPublic(stage=run.stage, done=run.done, total=run.total),
        counts=RunCountsPublic(**run.counts),
        worker=WorkerPublic(host=run.host, pid=run.pid, heartbeat_at=run.heartbeat_at),
        fetch=fetch_public(run),
        transaction_time=run.transaction_time,
        error=run.error,
        problems=run.problems,
        write_back=run.write_back,
        results_available=run.has_results,
    )


def fetch_public(run: RunInfo) -> FetchPublic:
    changes = run.changes or {}
    since = changes.get("since")
    return FetchPublic(
        mode=run.mode,
        requested=run.requested_mode,
        based_on=run.based_on,
        since=dt.datetime.fromisoformat(since) if isinstance(since, str) else None,
        reason=changes.get("reason"),
        **{
            name: changes.get(name)
            for name in ("read", "kept", "carried", "replaced", "deleted", "patients")
        },
    )


# ---------------------------------------------------------------- funnel
class FunnelCounter(Funnel):
    """The funnel (service/ranked_output.Funnel) of a run's criteria, fed while storing."""

    def __init__(self, criteria: list[dict[str, str]]) -> None:
        super().__init__([c["id"] for c in criteria])
        self.criteria = criteria

    def result(self, run: RunInfo) -> AttritionPublic:
        steps = [
            FunnelStepPublic(
                id=criterion["id"],
                kind=criterion["kind"],
                assessment=criterion["assessment"],
                text=criterion["text"],
                verdicts=VerdictCountsPublic(
                    pass_=step.verdicts["pass"],
                    fail=step.verdicts["fail"],
                    unknown=step.verdicts["unknown"],
                    not_applicable=step.verdicts["not_applicable"],
                ),
                remaining_before=step.remaining_before,
                dropped=step.dropped,
                remaining_after=step.remaining_after,
                unknown=step.unknown,
                unknown_share=round(step.unknown / step.remaining_before, 4)
                if step.remaining_before
                else 0.0,
            )
            for criterion, step in zip(self.criteria, self.steps(), strict=True)
        ]
        return AttritionPublic(
            run=run.id,
            trial=trial_ref(run),
            as_of=run.as_of,
            patients=self.patients,
            steps=steps,
            remaining=self.remaining,
            likely_eligible=self.statuses["likely_eligible"],
            possibly_eligible=self.statuses["possibly_eligible"],
            excluded=self.excluded,
        )


def attrition(store: SweepStore, run: RunInfo) -> AttritionPublic:
    """The funnel stored with the run (computed from its results if it has none)."""
    if run.attrition is not None:
        return AttritionPublic.model_validate(run.attrition)
    run = store.with_results(run.id)
    counter = FunnelCounter(run.criteria)
    for stored in store.summaries(run.id):
        counter.add(stored.verdicts, stored.status)
    return counter.result(run)


# ---------------------------------------------------------------- diff
def _ref(run: RunInfo) -> RunRefPublic:
    return RunRefPublic(
        id=run.id,
        as_of=run.as_of,
        trial_version=run.trial_version,
        terminology=run.terminology_version,
        ended_at=run.ended_at,
    )


def _merge(
    earlier: Iterable[StoredResult], later: Iterable[StoredResult]
) -> Iterator[tuple[StoredResult | None, StoredResult | None]]:
    """Pairs by patient from two streams sorted by patient (binary order on both sides)."""
    left, right = iter(earlier), iter(later)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.patient < b.patient):
            yield a, None
            a = next(left, None)
        elif a is None or b.patient < a.patient:
            yield None, b
            b = next(right, None)
        else:
            yield a, b
            a, b = next(left, None), next(right, None)


def _classify(
    a: StoredResult | None, b: StoredResult | None, shared: list[str]
) -> PatientChangePublic | None:
    before = a.status if a else None
    after = b.status if b else None
    changed = []
    if a is not None and b is not None:
        changed = [
            CriterionChangePublic(id=c, before=a.verdicts[c], after=b.verdicts[c])
            for c in shared
            if a.verdicts.get(c) != b.verdicts.get(c)
        ]
    was, now = before in CANDIDATE, after in CANDIDATE
    if now and not was:
        change = "new"
    elif was and not now:
        change = "dropped"
    elif a is None:
        change = "arrived"  # new to the population, not a candidate: never "unchanged"
    elif b is None:
        change = "left"
    elif was and now and before != after:
        change = "status"
    elif changed:
        change = "verdicts"
    else:
        return None
    patient = b.patient if b is not None else a.patient if a is not None else ""
    return PatientChangePublic(
        patient=patient,
        change=change,
        before=before,
        after=after,
        rank_before=a.rank if a else None,
        rank_after=b.rank if b else None,
        criteria=changed,
    )


def _screened(result: StoredResult | None) -> Screened | None:
    return None if result is None else Screened(result.status, result.verdicts)


def _with_decision(
    change: PatientChangePublic | None,
    a: StoredResult | None,
    b: StoredResult | None,
    history: Sequence[Decision],
    earlier: dt.date,
    later: dt.date,
) -> PatientChangePublic | None:
    """Where a patient with decisions goes in the diff.

    Back under `new` when their decision gives way in this run: a declined or screen-failed
    patient whose record changed in their favour from `earlier` to `later`, or a not-now
    patient whose date came between the two as-of dates (`returns_as_new`), while a candidate
    in `later`.
    Under `decided` instead of `new` while an open decision holds them. Elsewhere as without
    decisions, the decision named."""
    latest = current(history)
    if latest is None or b is None:
        return change
    back = returns_as_new(latest, _screened(a), _screened(b), later)
    if latest.state == "not_now" and returns_as_new(latest, None, None, earlier):
        back = False  # its date had come by the earlier run: it came back then
    if back and b.status in CANDIDATE:
        return PatientChangePublic(
            patient=b.patient,
            change="new",
            before=a.status if a else None,
            after=b.status,
            rank_before=a.rank if a else None,
            rank_after=b.rank,
            criteria=change.criteria if change else [],
            decision=latest.state,
        )
    held = open_decision(history, later)
    if change is None or held is None:
        return change
    kind = "decided" if change.change == "new" else change.change
    return change.model_copy(update={"change": kind, "decision": held.state})


def diff_runs(
    store: SweepStore,
    earlier: RunInfo,
    later: RunInfo,
    decisions: Mapping[str, Sequence[Decision]] | None = None,
) -> DiffPublic:
    """What changed from `earlier` to `later` (two completed runs of one trial).

    With `decisions` (each patient's history for the trial), patients with an open decision
    are kept apart from the new candidates, and those whose decision gives way come back as
    new (`_with_decision`)."""
    if earlier.trial_id != later.trial_id:
        raise BadRequest(
            f"runs {earlier.id} and {later.id} are of different trials "
            f"({earlier.trial_id}, {later.trial_id})"
        )
    if earlier.id == later.id:
        raise BadRequest(f"run {later.id} compared with itself")
    earlier, later = store.with_results(earlier.id), store.with_results(later.id)
    notes = []
    before_ids, after_ids = earlier.criterion_ids, later.criterion_ids
    shared = [c for c in after_ids if c in set(before_ids)]
    if earlier.trial_version != later.trial_version:
        added = sorted(set(after_ids) - set(before_ids))
        removed = sorted(set(before_ids) - set(after_ids))
        notes.append(
            f"trial version changed {earlier.trial_version} -> {later.trial_version}"
            + (f"; criteria added: {', '.join(added)}" if added else "")
            + (f"; criteria removed: {', '.join(removed)}" if removed else "")
            + ("; verdicts are compared on the criteria both versions share" if added else "")
        )
    if earlier.terminology_version != later.terminology_version:
        notes.append(
            f"code tables changed {earlier.terminology_version} -> {later.terminology_version}"
        )
    if earlier.as_of != later.as_of:
        notes.append(
            f"as_of moved {earlier.as_of} -> {later.as_of}: look-back windows moved with it"
        )
    lists: dict[str, list[PatientChangePublic]] = {
        "new": [],
        "dropped": [],
        "status": [],
        "verdicts": [],
        "arrived": [],
        "left": [],
    }
    if decisions is not None:
        lists["decided"] = []
    unchanged = 0
    for a, b in _merge(
        store.summaries(earlier.id, order="patient"), store.summaries(later.id, order="patient")
    ):
        change = _classify(a, b, shared)
        who = b if b is not None else a
        history = decisions.get(who.patient) if decisions and who is not None else None
        if history:
            change = _with_decision(change, a, b, history, earlier.as_of, later.as_of)
        if change is None:
            unchanged += 1
        else:
            lists[change.change].append(change)
    for name, changes in lists.items():
        # dropped patients in their old order; everyone else in the new ranking
        changes.sort(
            key=lambda c: (
                (c.rank_before if name in ("dropped", "left") else c.rank_after) or 0,
                c.patient,
            )
        )
    return DiffPublic(
        trial=later.trial_id,
        run=_ref(later),
        against=_ref(earlier),
        notes=notes,
        new=lists["new"],
        dropped=lists["dropped"],
        status=lists["status"],
        verdicts=lists["verdicts"],
        arrived=lists["arrived"],
        left=lists["left"],
        decided=lists.get("decided", []),
        counts={**{name: len(items) for name, items in lists.items()}, "unchanged": unchanged},
    )


# ---------------------------------------------------------------- exports
def ranked_json(
    store: SweepStore, run: RunInfo, *, limit: int | None = None, status: str | None = None
) -> Iterator[bytes]:
    """The ranked list contract (`RankedListPublic`), streamed: `screen --format json`."""
    head = {"trial": trial_ref(run).model_dump(), "as_of": run.as_of}
    # rank_body: results stored before the fix carry a second "rank"; written with one
    bodies = (rank_body(body) for body in store.results(run.id, limit=limit, status=status))
    return json_chunks(head, bodies, run.counts)


def csv_lines(
    store: SweepStore, run: RunInfo, *, limit: int | None = None, status: str | None = None
) -> Iterator[str]:
    """One row per patient, one column per criterion verdict: `screen --format csv`."""
    results = (orjson.loads(body) for body in store.results(run.id, limit=limit, status=status))
    return ranked_output.csv_lines(run.criterion_ids, results)


def group_id(trial_id: str) -> str:
    """The candidates Group's id: one Group per trial, its members replaced by each run."""
    return stable_id(trial_id, "candidates")


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def transaction(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle that PUTs each resource to its id."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [_put(r) for r in resources]}


def fhir_bundle(
    store: SweepStore,
    run: RunInfo,
    *,
    title: str | None = None,
    dropped: Iterable[str] = (),
    subjects: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle: ResearchStudy, candidates Group, ResearchSubjects.

    The ResearchSubjects are `subjects` (patient -> status: the write-back's plan,
    service/worklist/research_subject.write_plan) when given; else one `candidate` per
    candidate, and one `ineligible` (R4: "did not meet one or more criteria") per patient in
    `dropped` (candidates in an earlier run, ineligible now): the engine's view, as exported.
    """
    study_ref = f"ResearchStudy/{study_id(run.trial_id)}"
    note = f"sweep run {run.id}, as of {run.as_of}"
    candidates = list(store.summaries(run.id, candidates_only=True))
    group: dict[str, Any] = {
        "resourceType": "Group",
        "id": group_id(run.trial_id),
        "identifier": [{"system": OUR_GROUPS, "value": run.trial_id}],
        "name": f"Candidates for {run.trial_id} ({note})",
        "type": "person",
        "actual": True,
        "quantity": len(candidates),
        "characteristic": [
            {
                "code": {"text": "candidate for research study"},
                "valueReference": {"reference": study_ref, "display": run.trial_id},
                "exclude": False,
            }
        ],
    }
    if candidates:  # FHIR JSON has no empty arrays
        # Members in rank order: the best candidates first.
        group["member"] = [{"entity": {"reference": c.patient}} for c in candidates]
    if subjects is None:
        subjects = {c.patient: "candidate" for c in candidates}
        subjects |= {patient: "ineligible" for patient in dropped if patient not in subjects}
    return transaction(
        [
            research_study(run.trial_id, title),
            group,
            *(research_subject(run.trial_id, p, status) for p, status in subjects.items()),
        ]
    )
