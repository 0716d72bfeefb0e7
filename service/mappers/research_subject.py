"""ResearchSubject -> StudyParticipation (R4: `individual`, `study`, `status`, `period`).

The status is read as its FHIR code in any case or spelling (`ON-STUDY`, `On Study`). Statuses
before enrolment (candidate, screening, eligible ...) are no participation. `pending-on-study`
(enrolled, not started) and a status that is missing or is no R4 code (an R5 record, a local
word) are kept: the criterion cannot call them no participation.
"""

from __future__ import annotations

from service.facts import StudyParticipation, unread_status
from service.mappers.common import MappingError, Resource, parse_date_span, status_word

# R4 research-subject-status values that mean the person was enrolled in the study.
ENROLLED = frozenset(
    {
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "follow-up",
        "off-study",
        "withdrawn",
    }
)
# Enrolled but not started: participation about to begin.
PENDING = "pending-on-study"
# R4 statuses before enrolment: no participation.
NOT_ENROLLED = frozenset(
    {"candidate", "eligible", "ineligible", "not-registered", "potential-candidate", "screening"}
)


def map_research_subject(
    resource: Resource, source: str | None = None
) -> StudyParticipation | None:
    sent = resource.get("status")
    status = status_word(sent) if isinstance(sent, str) and sent.strip() else None
    if status in NOT_ENROLLED:
        return None
    if status is None or (status not in ENROLLED and status != PENDING):
        status = unread_status(sent.strip() if isinstance(sent, str) else "not recorded")
    study = resource.get("study") or {}
    names = tuple(
        name
        for name in (
            study.get("reference"),
            (study.get("identifier") or {}).get("value"),
            study.get("display"),
        )
        if isinstance(name, str) and name.strip()
    )
    if not names:
        raise MappingError("ResearchSubject.study names no study")
    label = names[0]
    period = resource.get("period") or {}
    start, start_latest = parse_date_span(period.get("start"))
    end, end_latest = parse_date_span(period.get("end"))
    return StudyParticipation(
        reference=f"ResearchSubject/{resource.get('id')}",
        study=label,
        status=status,
        start=start,
        end=end,
        source=source,
        names=names,
        start_latest=start_latest,
        end_latest=end_latest,
    )
