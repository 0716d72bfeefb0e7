"""The recruitment report: per trial and period, how far patients got, from the engine's
screen to enrolment. Pure: the decisions, the sweep summaries, the period and the zone are
passed in (the API reads them: service/api/report.py).

The period is `start` to `end`, both dates inclusive, in the configured zone (service/clock.py):
a decision made at 23:30 in that zone counts on that day, whatever the date in UTC.

- screened, candidates: from the latest sweep completed in the period (by its end time), its
  stored counts: `patients`, and `likely_eligible + possibly_eligible`. One sweep rather than
  the distinct patients across every sweep in the period: a sweep screens the trial's whole
  population, so the latest is the population as it stood, and its counts outlive its
  per-patient results (only the newest runs keep those: `SweepStore.purge_results`). Zero,
  with `sweep` None, when no sweep completed in the period.
- reviewed: the patients with any decision recorded in the period (`to_review` included: the
  coordinator put them on the list).
- the state columns (to_review, contacted, consented, declined, screen_failed, enrolled,
  not_now): each reviewed patient counted once, under their latest decision in the period, so
  they add up to `reviewed`. An enrolled patient is not counted as consented or contacted as
  well, nor a consented one as contacted.
- screen_failed_by_reason: the patients counted under screen_failed, by the criterion their
  latest decision names (`unspecified` for a decision without one: read back from the EHR's
  ResearchSubject, which names no criterion).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.worklist.model import STATES, Decision, DecisionState, current

__all__ = [
    "FUNNEL",
    "RecruitmentReport",
    "SweepSummary",
    "funnel",
    "recruitment_report",
    "report_csv",
]

# What a screen_failed decision without a criterion is counted under (the API requires one;
# a decision read back from the EHR's ResearchSubject has none).
NO_REASON = "unspecified"


@dataclass(frozen=True)
class SweepSummary:
    """What the report needs of a completed sweep (a `RunInfo`'s id, end and counts)."""

    run_id: int
    ended_at: dt.datetime  # aware
    patients: int
    likely_eligible: int
    possibly_eligible: int


@dataclass(frozen=True)
class RecruitmentReport:
    trial_id: str
    start: dt.date
    end: dt.date
    sweep: int | None  # the run the engine's counts come from
    screened: int
    candidates: int
    reviewed: int
    states: Mapping[DecisionState, int]  # every state, zero included
    screen_failed_by_reason: Mapping[str, int] = field(default_factory=dict)


# The funnel from the engine to enrolment: (label, the report's count).
FUNNEL: tuple[tuple[str, str], ...] = (
    ("Screened by the engine", "screened"),
    ("Candidates", "candidates"),
    ("Reviewed", "reviewed"),
    ("Contacted", "contacted"),
    ("Consented", "consented"),
    ("Enrolled", "enrolled"),
)


def _day(moment: dt.datetime, zone: dt.tzinfo) -> dt.date:
    return moment.astimezone(zone).date()


DEFAULT_DAYS = 30  # the period when none is asked for: the last 30 days, today included


def report_period(
    start: dt.date | None, end: dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The period asked for, both days inclusive: `end` defaults to today, `start` to
    DEFAULT_DAYS - 1 days before `end`. ValueError when it ends before it starts."""
    last = end or today
    first = start or last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")
    return first, last


def recruitment_report(
    trial_id: str,
    start: dt.date,
    end: dt.date,
    decisions: Iterable[Decision],
    sweeps: Sequence[SweepSummary],
    zone: dt.tzinfo,
) -> RecruitmentReport:
    """The report for `trial_id` from `start` to `end` inclusive (policy: module docstring).
    `decisions` and `sweeps` may hold other trials' and other days': only the trial's
    decisions made, and sweeps ended, in the period count. ValueError when end < start."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    in_period = [s for s in sweeps if start <= _day(s.ended_at, zone) <= end]
    latest = max(in_period, key=lambda s: (s.ended_at, s.run_id), default=None)
    histories: dict[str, list[Decision]] = {}
    for decision in decisions:
        if decision.trial_id == trial_id and start <= _day(decision.at, zone) <= end:
            histories.setdefault(decision.patient, []).append(decision)
    latest_decisions = [d for d in map(current, histories.values()) if d is not None]
    states = Counter(d.state for d in latest_decisions)
    reasons = Counter(
        d.criterion or NO_REASON for d in latest_decisions if d.state == "screen_failed"
    )
    return RecruitmentReport(
        trial_id=trial_id,
        start=start,
        end=end,
        sweep=latest.run_id if latest else None,
        screened=latest.patients if latest else 0,
        candidates=latest.likely_eligible + latest.possibly_eligible if latest else 0,
        reviewed=len(latest_decisions),
        states={state: states[state] for state in STATES},
        screen_failed_by_reason=dict(sorted(reasons.items())),
    )


def funnel(report: RecruitmentReport) -> list[tuple[str, int]]:
    """The funnel's steps with their counts, engine first."""
    values: dict[str, int] = {state: count for state, count in report.states.items()}
    values |= {"screened": report.screened, "candidates": report.candidates}
    values["reviewed"] = report.reviewed
    return [(label, values[key]) for label, key in FUNNEL]


def report_csv(report: RecruitmentReport) -> str:
    """The report as CSV: one `measure,criterion,count` row per count, the screen failures
    once more by criterion (`screen_failed,<criterion id>,n`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["measure", "criterion", "count"])
    writer.writerow(["screened", "", report.screened])
    writer.writerow(["candidates", "", report.candidates])
    writer.writerow(["reviewed", "", report.reviewed])
    for state, count in report.states.items():
        writer.writerow([state, "", count])
    for criterion, count in report.screen_failed_by_reason.items():
        writer.writerow(["screen_failed", criterion, count])
    return buffer.getvalue()
