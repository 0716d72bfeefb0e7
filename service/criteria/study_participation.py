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
from service.facts import PatientFacts, StudyParticipation, status_unread

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
                Evidence(
                    reference=study.reference,
                    value=study.study,
                    date=study.start,
                    note=f"status {what}",
                ),
            )
            continue
        ongoing = study.end is None and study.status not in OFF_STUDY
        evidence = Evidence(
            reference=study.reference,
            value=study.study,
            date=study.start,
            note=f"status {study.status}, ended {study.end or 'not recorded'}",
        )
        if ongoing or (study.end is not None and study.end >= since):
            found.decisive.append(evidence)
        elif study.end is None and study.start is not None and study.start >= since:
            found.decisive.append(evidence)  # off study now, but it started inside the window
        elif study.end is None:
            # Off study on an unrecorded date: it may or may not have been within the window.
            found.doubt(
                f"another study ended on an unrecorded date: {study.study}",
                Evidence(
                    reference=study.reference,
                    value=study.study,
                    date=study.start,
                    note="end date not recorded",
                ),
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


def _is_this_trial(study: StudyParticipation, trial_id: str) -> bool:
    """Any name of the study (reference, identifier, display) holds this trial's id, in any
    case ("ResearchStudy/nct06946485", display "NCT06946485 CHT101")."""
    wanted = trial_id.casefold()
    return any(wanted in name.casefold() for name in (study.study, *study.names))
