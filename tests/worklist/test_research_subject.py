"""Decision states <-> ResearchSubject.status: the reviewed CSV (loaded and checked), the
read-back (which EHR changes become decisions, case by case) and the sweep's write plan
(a coordinator's open decision is never overwritten by the engine's view)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.worklist.model import STATES, Decision, DecisionState
from service.worklist.research_subject import (
    EHR,
    R4_STATUSES,
    STATUS_FILE,
    StatusMapError,
    load_status_map,
    read_back,
    research_subject,
    status_map,
    subject_id,
    write_plan,
)

TRIAL = "NCT06946485"
NANJING = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 27, 21, 30, tzinfo=NANJING)
TODAY = dt.date(2026, 11, 27)
P01, P02, P03 = "Patient/p01", "Patient/p02", "Patient/p03"


# ---------------------------------------------------------------- the reviewed mapping
def test_the_bundled_mapping_is_the_reviewed_one() -> None:
    statuses = load_status_map()
    assert dict(statuses.written) == {
        "to_review": "potential-candidate",
        "contacted": "screening",
        "consented": "pending-on-study",
        "declined": "not-registered",
        "screen_failed": "ineligible",
        "enrolled": "on-study",
        "not_now": "candidate",
    }
    assert dict(statuses.read) == {
        "potential-candidate": "to_review",
        "screening": "contacted",
        "pending-on-study": "consented",
        "not-registered": "declined",
        "withdrawn": "declined",
        "ineligible": "screen_failed",
        "follow-up": "enrolled",
        "on-study": "enrolled",
        "on-study-intervention": "enrolled",
        "on-study-observation": "enrolled",
    }
    # Read back as nothing, so reported: candidate (the sweep's own, and not-now needs a
    # date), eligible and off-study (no decision state says either).
    assert R4_STATUSES - set(statuses.read) == {"candidate", "eligible", "off-study"}
    assert set(statuses.written) == set(STATES)
    assert all(reason.strip() for reason in statuses.reasons.values())
    assert status_map() == statuses


def _csv(tmp_path: Path, *rows: str, header: str = "state,status,direction,reason") -> Path:
    path = tmp_path / "statuses.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


VALID = [
    "to_review,potential-candidate,both,listed",
    "contacted,screening,both,approached",
    "consented,pending-on-study,both,signed",
    "declined,not-registered,both,said no",
    "screen_failed,ineligible,both,out",
    "enrolled,on-study,both,on",
    "not_now,candidate,write,later",
]


def test_a_minimal_valid_file_loads(tmp_path: Path) -> None:
    loaded = load_status_map(_csv(tmp_path, *VALID))
    assert loaded.written["consented"] == "pending-on-study"
    assert "candidate" not in loaded.read


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({0: "to_review,potential-candidate,both,"}, "line 2: no reason"),
        ({0: "reviewing,potential-candidate,both,x"}, "'reviewing' is not a decision state"),
        ({0: "to_review,maybe,both,x"}, "'maybe' is not an R4 ResearchSubject.status"),
        ({0: "to_review,potential-candidate,sideways,x"}, "direction 'sideways'"),
        ({0: "to_review,potential-candidate,both"}, "3 columns"),
        ({6: "not_now,candidate,both,later"}, "not_now cannot be read back"),
        ({1: "to_review,screening,both,x"}, "line 3: to_review is written as"),
        ({1: "contacted,potential-candidate,read,x"}, "is read back as to_review already"),
        ({1: "screen_failed,ineligible,both,out", 4: "contacted,screening,both,x"}, "order"),
        ({6: "not_now,candidate,read,x"}, "not_now cannot be read back"),
        ({6: "enrolled,on-study-intervention,read,x"}, "no status written for not_now"),
    ],
    ids=[
        "no-reason",
        "unknown-state",
        "not-r4",
        "bad-direction",
        "short-row",
        "not-now-read",
        "state-written-twice",
        "status-read-twice",
        "out-of-order",
        "not-now-read-only",
        "state-never-written",
    ],
)
def test_a_faulty_file_is_refused_naming_the_line(
    tmp_path: Path, change: dict[int, str], says: str
) -> None:
    rows = [change.get(i, row) for i, row in enumerate(VALID)]
    with pytest.raises(StatusMapError, match=says):
        load_status_map(_csv(tmp_path, *rows))


def test_a_wrong_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StatusMapError, match="line 1: header"):
        load_status_map(_csv(tmp_path, *VALID, header="state,code,direction,reason"))


def test_the_file_ships_inside_the_package() -> None:
    assert STATUS_FILE.parent.name == "worklist"
    assert STATUS_FILE.read_text(encoding="utf-8").startswith("state,status,direction,reason\n")


# ---------------------------------------------------------------- read-back
def decision(patient: str, state: DecisionState, **fields: Any) -> Decision:
    values: dict[str, Any] = {
        "trial_id": TRIAL,
        "patient": patient,
        "state": state,
        "subject": "coordinator-7",
        "at": AT - dt.timedelta(days=1),
    }
    values.update(fields)
    return Decision(**values)


def ours(patient: str, status: str, **fields: Any) -> dict[str, Any]:
    return research_subject(TRIAL, patient, status) | fields


def back(
    resources: list[dict[str, Any]],
    known: dict[str, str] | None = None,
    histories: dict[str, list[Decision]] | None = None,
) -> Any:
    return read_back(resources, TRIAL, known or {}, histories or {}, status_map(), AT)


def test_a_status_changed_in_the_ehr_becomes_a_decision_by_the_ehr() -> None:
    result = back([ours(P01, "on-study")], known={P01: "candidate"})
    [made] = result.decisions
    assert (made.trial_id, made.patient, made.state, made.subject, made.at) == (
        TRIAL,
        P01,
        "enrolled",
        EHR,
        AT,
    )
    assert made.note == f"read back from ResearchSubject/{subject_id(TRIAL, P01)}: status on-study"
    assert (made.criterion, made.until) == (None, None)
    assert result.seen == {P01: "on-study"}
    assert result.unmapped == []


def test_the_status_cohort_match_wrote_is_no_change() -> None:
    result = back([ours(P01, "screening")], known={P01: "screening"})
    assert (result.decisions, result.unmapped, result.seen, result.adopted) == ([], [], {}, {})


def test_a_status_that_says_what_the_current_decision_says_is_no_change() -> None:
    # The write-back of "contacted" failed (cohort-match last wrote candidate); the EHR shows
    # screening anyway; and withdrawn is read as declined, the current decision.
    histories = {P01: [decision(P01, "contacted")], P02: [decision(P02, "declined")]}
    result = back(
        [ours(P01, "screening"), ours(P02, "withdrawn")],
        known={P01: "candidate", P02: "not-registered"},
        histories=histories,
    )
    assert result.decisions == []
    assert result.seen == {P01: "screening", P02: "withdrawn"}


def test_a_change_that_contradicts_the_current_decision_becomes_the_newer_one() -> None:
    histories = {P01: [decision(P01, "enrolled")]}
    result = back([ours(P01, "ineligible")], known={P01: "on-study"}, histories=histories)
    [made] = result.decisions
    assert (made.state, made.criterion) == ("screen_failed", None)


@pytest.mark.parametrize("status", ["candidate", "off-study", "eligible"])
def test_a_changed_status_no_state_reads_is_reported_not_guessed(status: str) -> None:
    histories = {P01: [decision(P01, "enrolled")]}
    result = back([ours(P01, status)], known={P01: "on-study"}, histories=histories)
    assert result.decisions == []
    [reported] = result.unmapped
    assert (reported.patient, reported.status) == (P01, status)
    assert reported.resource == f"ResearchSubject/{subject_id(TRIAL, P01)}"
    assert result.seen == {}


def test_without_a_record_the_sweeps_own_statuses_are_taken_as_written() -> None:
    # ResearchSubjects a sweep wrote before cohort-match kept records of them.
    result = back([ours(P01, "candidate"), ours(P02, "ineligible"), ours(P03, "on-study")])
    assert result.adopted == {P01: "candidate", P02: "ineligible"}
    assert result.seen == {P03: "on-study"}
    assert [(d.patient, d.state) for d in result.decisions] == [(P03, "enrolled")]


def test_only_our_research_subjects_of_this_study_are_read() -> None:
    other_study = research_subject("NCT00000001", P01, "on-study")
    made_by_the_ehr = ours(P02, "on-study", id="ehr-rs-1")  # same study, another id
    not_a_patient = ours(P03, "on-study", individual={"reference": "Group/g1"})
    no_status = {k: v for k, v in ours(P03, "on-study").items() if k != "status"}
    observation = {"resourceType": "Observation", "id": "o1", "status": "final"}
    result = back([other_study, made_by_the_ehr, not_a_patient, no_status, observation])
    assert (result.decisions, result.unmapped, result.seen, result.adopted) == ([], [], {}, {})


def test_absolute_and_versioned_references_are_read() -> None:
    subject = ours(
        P01,
        "pending-on-study",
        study={"reference": f"http://ehr.test/fhir/ResearchStudy/cm-{TRIAL}"},
        individual={"reference": "http://ehr.test/fhir/Patient/p01/_history/3"},
    )
    [made] = back([subject], known={P01: "screening"}).decisions
    assert (made.patient, made.state) == (P01, "consented")


# ---------------------------------------------------------------- the sweep's write plan
def plan(
    candidates: list[str],
    dropped: list[str] | None = None,
    histories: dict[str, list[Decision]] | None = None,
    known: dict[str, str] | None = None,
    leave: set[str] | None = None,
) -> Any:
    return write_plan(
        candidates, dropped or [], histories or {}, known or {}, status_map(), TODAY, leave or set()
    )


def test_without_decisions_the_plan_is_the_engines_view() -> None:
    made = plan([P01, P02], dropped=[P03])
    assert made.statuses == {P01: "candidate", P02: "candidate", P03: "ineligible"}
    assert made.decided == {}


def test_an_open_decision_is_never_overwritten_by_the_engine() -> None:
    enrolled = decision(P01, "enrolled")
    declined = decision(P02, "declined")
    made = plan(
        [P01],
        dropped=[P02],
        histories={P01: [enrolled], P02: [declined]},
        known={P01: "on-study", P02: "withdrawn"},  # both agree with their decision
    )
    assert made.statuses == {}  # neither candidate over on-study nor ineligible over declined


def test_a_decision_the_ehr_does_not_show_yet_is_written_again() -> None:
    enrolled = decision(P01, "enrolled", id=7)
    contacted = decision(P02, "contacted", id=8)
    made = plan(
        [P01],
        dropped=[P03],
        histories={P01: [enrolled], P02: [contacted], P03: [decision(P03, "enrolled")]},
        known={P01: "candidate"},  # its write-back failed; P02's was off: never written
    )
    assert made.statuses == {P01: "on-study", P02: "screening", P03: "on-study"}
    assert made.decided == {P01: enrolled, P02: contacted, P03: made.decided[P03]}


def test_a_lapsed_not_now_gives_the_patient_back_to_the_engine() -> None:
    lapsed = decision(P01, "not_now", until=TODAY)
    waiting = decision(P02, "not_now", until=TODAY + dt.timedelta(days=1))
    made = plan([P01, P02], histories={P01: [lapsed], P02: [waiting]}, known={P02: "candidate"})
    assert made.statuses == {P01: "candidate"}


def test_an_ehr_change_no_state_reads_is_left_alone() -> None:
    made = plan(
        [P01, P02],
        histories={P02: [decision(P02, "enrolled")]},
        known={P02: "candidate"},
        leave={P01, P02},
    )
    assert made.statuses == {}
