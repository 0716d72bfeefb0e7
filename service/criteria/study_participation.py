"""`study_participation`: another clinical trial within `within_months` before `as_of`.

From ResearchSubject records. A study other than this trial that was ongoing, ended or started
inside the window fails; one that ended on an unrecorded date is `unknown`; so is one the
patient is enrolled in but has not started (`pending-on-study`) and one whose status could not
be read; no record passes (confirmed with the patient at screening).
"""

from __future__ import annotations

from service.criteria.common import Context, Findings, add_months, decide, unreadable
from service.criteria.model import StudyParticipationRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import PatientFacts, StudyParticipation, status_unread, written

OFF_STUDY = frozenset({"off-study", "withdrawn"})
PENDING = "pending-on-study"


def evaluate_study_participation(
    rule: StudyParticipationRule, facts: PatientFacts, ctx: Context
) -> Verdict:
    since = add_months(ctx.as_of, -rule.within_months)
    found = Findings()
    for study in facts.studies:
        if _is_this_trial(study, ctx.trial_id) or (
            study.start is not None and study.start > ctx.as_of
        ):
            continue
        if study.status == PENDING or status_unread(study.status):
            what = "enrolled, not started" if study.status == PENDING else study.status
            found.doubt(
                f"another study, status {what}: {study.study}; review",
                _evidence(study, f"status {what}"),
            )
            continue
        ongoing = study.end is None and study.status not in OFF_STUDY
        ended = "not recorded" if study.end is None else written(study.end, study.end_latest)
        evidence = _evidence(study, f"status {study.status}, ended {ended}")
        if study.start_latest is not None and study.start_latest > ctx.as_of:
            # Started "2026-11", screened on 5 November: it may not have begun yet.
            found.doubt(
                f"another study started {_started(study)}, possibly after {ctx.as_of}: "
                f"{study.study}; review",
                evidence,
            )
        elif ongoing or (study.end is not None and study.end >= since):
            found.decisive.append(evidence)
        elif study.end is not None and study.end_latest is not None and study.end_latest >= since:
            # Ended "2026-08" with the window opening on 20 August: either side of it.
            found.doubt(
                f"another study ended in {ended}, possibly within the {rule.within_months} "
                f"months before {ctx.as_of}: {study.study}; review",
                evidence,
            )
        elif study.end is None and study.start is not None and study.start >= since:
            found.decisive.append(evidence)  # off study now, but it started inside the window
        elif study.end is None and study.start_latest is not None and study.start_latest >= since:
            found.doubt(
                f"another study started in {_started(study)}, ended on an unrecorded date: "
                f"{study.study}",
                _evidence(study, "end date not recorded"),
            )
        elif study.end is None:
            # Off study on an unrecorded date: it may or may not have been within the window.
            found.doubt(
                f"another study ended on an unrecorded date: {study.study}",
                _evidence(study, "end date not recorded"),
            )
        else:
            found.shown.append(evidence)
    return decide(
        found,
        decided=lambda first: f"in another study within {rule.within_months} months: {first.value}",
        problem=unreadable(facts, "ResearchSubject"),
        nothing="no recent study found",
        only_shown=f"studies on record ended before {since}",
        absent="no record of participation in another clinical trial",
    )


def _evidence(study: StudyParticipation, note: str) -> Evidence:
    """The study as evidence, dated by its start as written (a partial one in the note)."""
    partial = study.start is not None and study.start_latest is not None
    return Evidence(
        reference=study.reference,
        value=study.study,
        date=None if partial else study.start,
        note=f"started {_started(study)}; {note}" if partial else note,
    )


def _started(study: StudyParticipation) -> str:
    return "" if study.start is None else written(study.start, study.start_latest)


def _is_this_trial(study: StudyParticipation, trial_id: str) -> bool:
    """Any name of the study (reference, identifier, display) holds this trial's id, in any
    case ("ResearchStudy/nct06946485", display "NCT06946485 CHT101")."""
    wanted = trial_id.casefold()
    return any(wanted in name.casefold() for name in (study.study, *study.names))
