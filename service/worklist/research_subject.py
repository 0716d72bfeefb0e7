"""A patient's ResearchSubject for a trial, as cohort-match writes it and reads it back.

- The resources: the trial's ResearchStudy and one ResearchSubject per patient, PUT to ids
  that are the same for the same trial and patient (`study_id`, `subject_id`), so a second
  write updates rather than duplicates (the sweep's Bundle, service/sweeps/report.py, and a
  decision's write-back, service/sweeps/write_back.py, write the same resource).
- The mapping between decision states and R4 `ResearchSubject.status` is data a coordinator
  reviews: research_subject_status.csv beside this module, one row per (state, status) with
  its direction and the reason (`load_status_map` validates it; the README explains each row).
  `both`: the state is written as that status and the status is read back as the state;
  `write`: written only; `read`: read back only. Every state is written as exactly one status;
  a status is read back as at most one state; `not_now` is never read back (it needs a date).
- `read_back` (pure): which of the trial's ResearchSubjects were changed in the EHR, and the
  decisions those changes become (who: `ehr`); a changed status no state reads is reported,
  never guessed.
- `write_plan` (pure): the status a sweep writes for each patient. A coordinator's open
  decision owns its patient's ResearchSubject: the sweep writes the decision's status (when
  the EHR does not have it yet: a failed or switched-off write-back is retried here), never
  `candidate` or `ineligible` over it.

Pure except `load_status_map`, which reads the CSV once.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from service.errors import DataError
from service.worklist.model import STATES, Decision, DecisionState, current, open_decision

__all__ = [
    "EHR",
    "R4_STATUSES",
    "STATUS_FILE",
    "SWEEP_STATUSES",
    "Plan",
    "ReadBack",
    "StatusMap",
    "StatusMapError",
    "Unmapped",
    "load_status_map",
    "read_back",
    "research_study",
    "research_subject",
    "stable_id",
    "status_map",
    "study_id",
    "study_identifier",
    "subject_id",
    "write_plan",
]

STATUS_FILE = Path(__file__).resolve().parent / "research_subject_status.csv"
HEADER = ("state", "status", "direction", "reason")
DIRECTIONS = frozenset({"both", "write", "read"})
# The R4 value set research-subject-status (required binding of ResearchSubject.status):
# http://hl7.org/fhir/R4/valueset-research-subject-status.html
R4_STATUSES = frozenset(
    {
        "candidate",
        "eligible",
        "follow-up",
        "ineligible",
        "not-registered",
        "off-study",
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "pending-on-study",
        "potential-candidate",
        "screening",
        "withdrawn",
    }
)
EHR = "ehr"  # who made a decision read back from the EHR's ResearchSubject
# What a sweep writes of its own (the engine's view). A ResearchSubject cohort-match has no
# record of saying one of these was written by a sweep before the records were kept (0005).
SWEEP_STATUSES = frozenset({"candidate", "ineligible"})
# Identifier systems. NCT numbers are ClinicalTrials.gov's (HL7 THO NamingSystem
# ClinicalTrials-Gov); other trial ids and the resources we create are ours.
CLINICALTRIALS_GOV = "https://clinicaltrials.gov"
OUR_TRIALS = "http://cohort-match.org/fhir/sid/trial"
OUR_SUBJECTS = "http://cohort-match.org/fhir/sid/research-subject"
NCT = re.compile(r"^NCT\d{8}$")


# ---------------------------------------------------------------- the resources
def stable_id(*parts: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) that is the same for the same parts."""
    readable = re.sub(r"[^A-Za-z0-9.-]", "-", parts[0])[:32]
    if len(parts) == 1:
        return f"cm-{readable}"
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    return f"cm-{readable}-{digest}"


def study_id(trial_id: str) -> str:
    """The ResearchStudy's id: the same for every run of the trial."""
    return stable_id(trial_id)


def subject_id(trial_id: str, patient: str) -> str:
    """The id of the patient's ResearchSubject for the trial (`patient`: "Patient/<id>")."""
    return stable_id(trial_id, patient)


def study_identifier(trial_id: str) -> dict[str, str]:
    system = CLINICALTRIALS_GOV if NCT.match(trial_id) else OUR_TRIALS
    return {"system": system, "value": trial_id}


def research_study(trial_id: str, title: str | None) -> dict[str, Any]:
    return {
        "resourceType": "ResearchStudy",
        "id": study_id(trial_id),
        "identifier": [study_identifier(trial_id)],
        "title": title or trial_id,
        "status": "active",
    }


def research_subject(trial_id: str, patient: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "ResearchSubject",
        "id": subject_id(trial_id, patient),
        "identifier": [{"system": OUR_SUBJECTS, "value": f"{trial_id}|{patient}"}],
        "status": status,
        "study": {"reference": f"ResearchStudy/{study_id(trial_id)}", "display": trial_id},
        "individual": {"reference": patient},
    }


# ---------------------------------------------------------------- the reviewed mapping
class StatusMapError(DataError):
    """research_subject_status.csv is not a mapping the service can use (file and line)."""


@dataclass(frozen=True)
class StatusMap:
    """Decision state -> the status written; status -> the state it is read back as."""

    written: Mapping[DecisionState, str]
    read: Mapping[str, DecisionState]
    reasons: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def agrees(self, status: str, state: DecisionState) -> bool:
        """Whether a ResearchSubject with `status` already says what `state` says."""
        return self.written.get(state) == status or self.read.get(status) == state


def _fault(row: Sequence[str]) -> str | None:
    """What is wrong with one row on its own, or None."""
    if len(row) != len(HEADER):
        return f"{len(row)} columns, expected {len(HEADER)}"
    state, status, direction, reason = (value.strip() for value in row)
    if state not in STATES:
        return f"{state!r} is not a decision state"
    if status not in R4_STATUSES:
        return f"{status!r} is not an R4 ResearchSubject.status"
    if direction not in DIRECTIONS:
        return f"direction {direction!r}: both, write or read"
    if direction != "write" and state == "not_now":
        return "not_now cannot be read back: it needs a date"
    return None if reason else "no reason"


def load_status_map(path: Path = STATUS_FILE) -> StatusMap:
    """The mapping in `path`, checked: header, known states and R4 statuses, directions, a
    reason on every row, rows in state order (as model.STATES) then by status, each state
    written as exactly one status, each status read as at most one state, not_now never read.
    StatusMapError names the file and line of the first fault."""
    written: dict[DecisionState, str] = {}
    read: dict[str, DecisionState] = {}
    reasons: dict[tuple[str, str], str] = {}
    previous: tuple[int, str] | None = None
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        header = tuple(next(rows, ()))
        faults = [] if header == HEADER else [(1, f"header {list(header)}, not {list(HEADER)}")]
        for line, row in enumerate(rows, start=2):
            fault = _fault(row)
            if fault is not None:
                faults.append((line, fault))
                break
            state, status, direction, reason = (value.strip() for value in row)
            known = cast(DecisionState, state)
            key = (STATES.index(known), status)
            if previous is not None and key <= previous:
                faults.append((line, f"{state},{status} is out of order or repeated"))
            elif direction != "read" and known in written:
                faults.append((line, f"{state} is written as {written[known]} already"))
            elif direction != "write" and status in read:
                faults.append((line, f"{status} is read back as {read[status]} already"))
            if faults:
                break
            previous = key
            if direction != "read":
                written[known] = status
            if direction != "write":
                read[status] = known
            reasons[(state, status)] = reason
    if faults:
        line, fault = faults[0]
        raise StatusMapError(f"{path.name} line {line}: {fault}")
    missing = [state for state in STATES if state not in written]
    if missing:
        raise StatusMapError(f"{path.name}: no status written for {', '.join(missing)}")
    return StatusMap(written, read, reasons)


@lru_cache(maxsize=1)
def status_map() -> StatusMap:
    """The bundled mapping, loaded once."""
    return load_status_map()


# ---------------------------------------------------------------- read-back and write plan
@dataclass(frozen=True)
class Unmapped:
    """A ResearchSubject the EHR changed to a status that no decision state reads."""

    patient: str
    resource: str  # "ResearchSubject/<id>"
    status: str


@dataclass(frozen=True)
class ReadBack:
    decisions: list[Decision]  # to record (who: EHR)
    unmapped: list[Unmapped]  # reported, left as the EHR has them, never overwritten
    seen: dict[str, str]  # patient -> a status the EHR set, now known (decided or agreeing)
    adopted: dict[str, str] = field(default_factory=dict)  # taken for a sweep's own write


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    """ResearchSubject.individual as "Patient/<id>" (relative, absolute or versioned)."""
    individual = resource.get("individual")
    text = individual.get("reference") if isinstance(individual, dict) else None
    if not isinstance(text, str):
        return None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != "Patient" or not parts[-1]:
        return None
    return f"Patient/{parts[-1]}"


def _of_study(resource: Mapping[str, Any], trial_id: str) -> bool:
    study = resource.get("study")
    text = study.get("reference") if isinstance(study, dict) else None
    wanted = f"ResearchStudy/{study_id(trial_id)}"
    return isinstance(text, str) and (text == wanted or text.endswith(f"/{wanted}"))


def read_back(
    resources: Iterable[Mapping[str, Any]],
    trial_id: str,
    known: Mapping[str, str],
    histories: Mapping[str, Sequence[Decision]],
    statuses: StatusMap,
    at: dt.datetime,
) -> ReadBack:
    """What the EHR changed on the trial's ResearchSubjects, as decisions.

    Only cohort-match's own ResearchSubjects are read (the study's, at the id `subject_id`
    gives the patient): one the EHR made itself for the study may stand beside ours, and which
    of two is current cannot be told. A status is a change when it differs both from `known`
    (what cohort-match last wrote, or read back, for the patient) and from what the patient's
    current decision says (`StatusMap.agrees`). Without a record for the patient, `candidate`
    and `ineligible` are taken for a sweep's own write (one made before records were kept),
    any other status for a change. A change becomes a decision in the state the mapping reads
    the status as, made by `EHR` at `at`, its note naming the resource and the status; a
    status the mapping does not read is `unmapped`. `seen` holds the EHR's statuses
    that now agree with the decisions, `adopted` those taken for a sweep's own (both to
    remember as known)."""
    decisions: list[Decision] = []
    unmapped: list[Unmapped] = []
    seen: dict[str, str] = {}
    adopted: dict[str, str] = {}
    for resource in resources:
        status = resource.get("status")
        patient = _patient_of(resource)
        if (
            resource.get("resourceType") != "ResearchSubject"
            or not isinstance(status, str)
            or patient is None
            or not _of_study(resource, trial_id)
            or resource.get("id") != subject_id(trial_id, patient)
            or known.get(patient) == status
        ):
            continue
        if patient not in known and status in SWEEP_STATUSES:
            adopted[patient] = status  # no record of it: taken for the sweep's own write
            continue
        reference = f"ResearchSubject/{resource['id']}"
        latest = current(histories.get(patient, ()))
        if latest is not None and statuses.agrees(status, latest.state):
            seen[patient] = status
            continue
        state = statuses.read.get(status)
        if state is None:
            unmapped.append(Unmapped(patient, reference, status))
            continue
        decisions.append(
            Decision(
                trial_id=trial_id,
                patient=patient,
                state=state,
                subject=EHR,
                at=at,
                note=f"read back from {reference}: status {status}",
            )
        )
        seen[patient] = status
    return ReadBack(decisions, unmapped, seen, adopted)


@dataclass(frozen=True)
class Plan:
    statuses: dict[str, str]  # patient -> the status to write, in the Bundle's order
    decided: dict[str, Decision]  # the patients written with their open decision's status


def write_plan(
    candidates: Sequence[str],
    dropped: Iterable[str],
    histories: Mapping[str, Sequence[Decision]],
    known: Mapping[str, str],
    statuses: StatusMap,
    today: dt.date,
    leave: Collection[str] = (),
) -> Plan:
    """What a sweep writes, patient by patient, in this order: the engine's `candidates`
    (`candidate`, rank order), the `dropped` (`ineligible`: candidates before, ineligible now),
    then the patients whose open decision the EHR does not show yet.

    A patient with an open decision (`open_decision` on `today`) gets the decision's status
    or nothing: nothing when `known` already agrees with it (the ResearchSubject is left as
    it is), the decision's status when it does not (a write-back that failed, was off, or
    never happened). The engine's view never replaces a coordinator's. Patients in `leave`
    (an EHR change no state reads: `read_back`'s `unmapped`) are not written at all."""
    holding = {
        patient: decision
        for patient, history in histories.items()
        if (decision := open_decision(history, today)) is not None
    }
    plan: dict[str, str] = {}
    for patients, status in ((candidates, "candidate"), (dropped, "ineligible")):
        for patient in patients:
            if patient not in holding and patient not in leave:
                plan.setdefault(patient, status)
    decided: dict[str, Decision] = {}
    for patient, decision in holding.items():
        was = known.get(patient)
        if patient in leave or (was is not None and statuses.agrees(was, decision.state)):
            continue
        plan[patient] = statuses.written[decision.state]
        decided[patient] = decision
    return Plan(plan, decided)
