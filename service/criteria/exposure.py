"""When a medication record says the drug was being taken: one policy for every rule.

A record rarely states its end. In order:
1. the end the record gives (effectivePeriod.end, boundsPeriod.end, or one the mapper derived
   from days supply, dispense quantity or dosage bounds; `MedicationExposure.end_basis` says
   which);
2. otherwise, when one of the record's value sets states `default_course_days` (a documented
   default per drug class, e.g. a short course for anti-infectives), that many days from the
   start (a course of N days from day D ends on D+N-1, as a derived supply does), so a 1980
   antibiotic order is not "current" in 2026, whatever its status. An administration records
   a dose (or an infusion), not the course it belongs to: with such a default it covers at
   least that many days from its start (IV ceftriaxone given yesterday is a course running
   today);
3. otherwise an active or on-hold record runs up to the day asked about (a G-CSF order with no
   end counts as running on the test date);
4. otherwise (completed, stopped, unknown status) the start day only.

A partial start or end ("2026-11") could be any day of its month or year. A rule asking
whether the drug may have been taken (E4's anti-infective, G-CSF before a count, a cause of a
low count) reads every day it could cover (its start's first day to its end's last day); a
rule counting what the record documents (treatment history: `documented=True`) reads only the
days it surely covers (its start's last day to its end's first day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from service.facts import MedicationExposure, written
from service.terminology import Terminology

__all__ = ["Exposure", "exposure", "undated"]

RUNNING_STATUSES = frozenset({"active", "on-hold", "in-progress"})


@dataclass(slots=True, unsafe_hash=True)  # not frozen: one per record read (facts.py)
class Exposure:
    start: date
    end: date
    basis: str  # how the end was found, for the evidence


def exposure(
    med: MedicationExposure, day: date, terms: Terminology, documented: bool = False
) -> Exposure | None:
    """The period `med` covers as seen on `day`, or None when it has no start date (a rule
    that must not miss the drug reads such a record with `undated`).

    A period never extends past `day`: later doses have not happened yet. Partial dates:
    every day it may cover, or (`documented`) only the days it surely covers.
    """
    if med.start is None:
        return None
    # `start` begins the period; a course counted from the start runs from `anchor`.
    start, recorded_end = med.start, med.end
    anchor = start
    if med.start_latest is not None or med.end_latest is not None:
        if documented:
            start = anchor = med.start_latest or med.start
        else:
            anchor = med.start_latest or med.start
            recorded_end = med.end_latest or med.end
    given = start if med.start_latest is None else written(med.start, med.start_latest)
    days = default_course_days(med, terms)
    if recorded_end is not None:
        end, basis = recorded_end, med.end_basis or "recorded end"
        if med.end is not None and med.end_latest is not None:
            basis += f" {written(med.end, med.end_latest)}"
        course = None if days is None else anchor + timedelta(days=max(days - 1, 0))
        if med.resource_type == "MedicationAdministration" and course is not None and course > end:
            # A dose (or an infusion) given is one of a course, not the course.
            end, basis = course, f"a dose given {given}: default {days}-day course from it"
    elif days is not None:
        end = anchor + timedelta(days=max(days - 1, 0))
        basis = f"no end recorded: default {days}-day course"
    elif med.status in RUNNING_STATUSES:
        end, basis = day, f"{med.status}, no end recorded: counted up to {day}"
    else:
        # "start day only": any day of a partial start's month or year may be it
        end, basis = anchor, f"{med.status}, no end recorded: start day only"
    return Exposure(start, min(max(end, start), max(day, start)), basis)


def default_course_days(med: MedicationExposure, terms: Terminology) -> int | None:
    """The shortest `default_course_days` among the record's value sets, if any states one."""
    found = [
        info.default_course_days
        for name in med.concepts
        if (info := terms.valuesets.get(name)) is not None and info.default_course_days is not None
    ]
    return min(found) if found else None


def undated(med: MedicationExposure, since: date, running_only: bool) -> bool:
    """A record that cannot be placed in time (no start the record states), so it may cover
    any day from `since` on, unless its recorded end is before `since`. Missing data is
    never a verdict: a rule asking "was it taken then?" reads it as "possibly".
    `running_only`: only when its status says it is still taken (active, on hold, in
    progress), for a rule about the day asked itself (a completed one is not taken now)."""
    end = med.end_latest or med.end
    if med.start is not None or (end is not None and end < since):
        return False
    return not running_only or med.status in RUNNING_STATUSES
