"""ResearchSubject -> StudyParticipation (R4: `individual`, `study`, `status`, `period`)."""

from __future__ import annotations

from service.facts import StudyParticipation
from service.mappers.common import MappingError, Resource, parse_date

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


def map_research_subject(
    resource: Resource, source: str | None = None
) -> StudyParticipation | None:
    status = resource.get("status")
    if status not in ENROLLED:
        return None  # candidate, screening, eligible, ineligible, not-registered ...
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
    return StudyParticipation(
        reference=f"ResearchSubject/{resource.get('id')}",
        study=label,
        status=status,
        start=parse_date(period.get("start")),
        end=parse_date(period.get("end")),
        source=source,
        names=names,
    )
