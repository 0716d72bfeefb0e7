"""The page view models: pure functions over engine results."""

from __future__ import annotations

import csv
import io
from datetime import date

from service.criteria.verdict import (
    CriterionResult,
    Evidence,
    PatientResult,
    PatientSummary,
    TrialRef,
)
from service.facts import Identifier
from service.ranking import rank, result_next_step
from service.web.views import (
    candidates_csv,
    checklist,
    display_user,
    explain,
    funnel,
    next_check,
    number,
    patient_banner,
    source_link,
)
from tests.conftest import load_nct

ISS = "https://ehr.hospital.test/fhir"


def _result(
    reference: str, verdicts: dict[str, str], *, status: str, score: float
) -> PatientResult:
    trial = load_nct()
    criteria = [
        CriterionResult(
            c.id,
            c.kind,
            c.assessment,
            c.text,
            verdicts.get(c.id, "pass"),
            "why",
            (),
            "check",  # type: ignore[arg-type]
        )
        for c in trial.criteria
    ]
    return PatientResult(
        TrialRef(trial.id, trial.version, "t"),
        PatientSummary(reference, 40, "female"),
        date(2026, 11, 20),
        status,  # type: ignore[arg-type]
        score,
        criteria,
        [],
    )


def test_funnel_counts_and_sequential_drop_off() -> None:
    trial = load_nct()
    first, second, third = (c.id for c in trial.criteria[:3])
    results = [
        _result("Patient/a", {first: "fail", second: "fail"}, status="ineligible", score=0),
        _result("Patient/b", {second: "fail"}, status="ineligible", score=0),
        _result(
            "Patient/c",
            {second: "unknown", third: "not_applicable"},
            status="possibly_eligible",
            score=0.5,
        ),
        _result("Patient/d", {}, status="likely_eligible", score=1),
    ]
    rows = funnel(trial, results)
    assert [r.id for r in rows] == [c.id for c in trial.criteria]  # protocol order
    assert (rows[0].passed, rows[0].failed, rows[0].remaining, rows[0].dropped) == (3, 1, 3, 1)
    # a failed before and fails again: counted as a fail, but dropped only once
    assert (rows[1].failed, rows[1].unknown, rows[1].remaining, rows[1].dropped) == (2, 1, 2, 1)
    assert (rows[2].not_applicable, rows[2].remaining, rows[2].dropped) == (1, 2, 0)
    assert rows[-1].remaining == 2


def test_funnel_leaves_out_a_deceased_patient_from_the_first_row() -> None:
    trial = load_nct()
    first = trial.criteria[0].id
    results = [
        # deceased: ineligible with every criterion passing, so no row drops them
        _result("Patient/dead", {}, status="ineligible", score=0),
        _result("Patient/b", {first: "fail"}, status="ineligible", score=0),
        _result("Patient/c", {}, status="likely_eligible", score=1),
    ]
    rows = funnel(trial, results)
    assert (rows[0].passed, rows[0].failed, rows[0].remaining, rows[0].dropped) == (2, 1, 1, 1)
    assert rows[-1].remaining == 1  # only the likely eligible one


def test_csv_has_the_clis_columns_in_rank_order() -> None:
    trial = load_nct()
    ranked = rank(
        [
            _result("Patient/z", {}, status="likely_eligible", score=1.0),
            _result("Patient/y", {trial.criteria[0].id: "fail"}, status="ineligible", score=0.0),
        ]
    )
    rows = list(csv.reader(io.StringIO(candidates_csv(trial, ranked))))
    assert rows[0] == [
        "rank",
        "patient",
        "name",
        "mrn",
        "identifiers",
        "status",
        "status_reason",
        "score",
        "age",
        "sex",
        "next_step",
        *(c.id for c in trial.criteria),
    ]
    assert rows[1][:10] == [
        "1",
        "Patient/z",
        "",
        "",
        "",
        "likely_eligible",
        "",
        "1.0",
        "40",
        "female",
    ]
    assert rows[2][:6] == ["2", "Patient/y", "", "", "", "ineligible"]
    assert rows[2][11] == "fail"


def test_source_links_only_for_plain_references() -> None:
    assert source_link(ISS, "Observation/o-1.2").href == f"{ISS}/Observation/o-1.2"  # type: ignore[union-attr]
    assert source_link(ISS + "/", "Condition/c1").href == f"{ISS}/Condition/c1"  # type: ignore[union-attr]
    for odd in ("javascript:alert(1)", "Observation/../x", "http://evil.test/Observation/1", "o1"):
        link = source_link(ISS, odd)
        assert link is not None
        assert link.href is None, odd
    assert source_link(ISS, None) is None


def test_checklist_groups_and_formats_evidence() -> None:
    trial = load_nct()
    result = _result("Patient/a", {}, status="likely_eligible", score=1.0)
    hgb = Evidence(
        "Observation/o1",
        None,
        11.8,
        "g/dL",
        118.0,
        "g/L",
        date(2026, 11, 10),
        "Hb 118 g/L >= 60 g/L",
    )
    derived = Evidence(
        None,
        None,
        52.5,
        "mL/min",
        None,
        None,
        None,
        "CrCl",
        None,
        ("Observation/w", "Observation/c"),
    )
    same = Evidence("Observation/o2", None, 5.0, "g/L", 5.0, "g/L")
    first = result.criteria[0]
    result.criteria[0] = CriterionResult(
        first.id, first.kind, first.assessment, first.text, "pass", "ok", (hgb, derived, same)
    )
    sheet = checklist(result, ISS)
    assert len(sheet.inclusion) + len(sheet.exclusion) == len(trial.criteria)
    assert {r.id for r in sheet.inclusion} == {
        c.id for c in trial.criteria if c.kind == "inclusion"
    }
    rows = sheet.inclusion[0].evidence
    assert (rows[0].recorded, rows[0].converted, rows[0].date) == (
        "11.8 g/dL",
        "118 g/L",
        "2026-11-10",
    )
    assert rows[0].source is not None
    assert rows[0].source.href == f"{ISS}/Observation/o1"
    assert rows[1].source is None
    assert [i.href for i in rows[1].inputs] == [f"{ISS}/Observation/w", f"{ISS}/Observation/c"]
    assert rows[2].converted is None  # same as recorded: not repeated
    assert rows[2].converted_same
    assert not rows[0].converted_same
    assert sheet.inclusion[0].check is None  # only unknown criteria say what would decide them


def test_explain_states_status_and_score() -> None:
    trial = load_nct()
    automatic = [c for c in trial.criteria if c.assessment == "automatic"]
    unknown = automatic[0]
    result = _result("Patient/a", {unknown.id: "unknown"}, status="possibly_eligible", score=0.9)
    status, score, order = explain(result, trial)
    assert "1 criteria the record should decide are still unknown" in status
    total = sum(c.cost for c in automatic)
    assert f"{number(total - unknown.cost)} of {number(total)} units" in score
    assert "ranked by status" in order
    failed = _result("Patient/b", {automatic[1].id: "fail"}, status="ineligible", score=0)
    assert explain(failed, trial)[0] == f"Ineligible: 1 criterion failed ({automatic[1].id})."


def test_annotation_units_are_not_shown() -> None:
    result = _result("Patient/a", {}, status="likely_eligible", score=1.0)
    first = result.criteria[0]
    score = Evidence("Observation/s", None, 12.0, "{score}", 12.0, "{score}")
    result.criteria[0] = CriterionResult(
        first.id, first.kind, first.assessment, first.text, "pass", "ok", (score,)
    )
    (row,) = checklist(result, ISS).inclusion[0].evidence
    assert row.recorded == "12"


def test_next_check_and_display_user() -> None:
    result = _result("Patient/a", {}, status="likely_eligible", score=1.0)
    result.next_step = "I7.hcg: Serum hCG within 7 days before enrollment (no result)"
    assert next_check(result) == result.next_step  # the text every channel shows, uncut
    assert next_check(result, width=12) == "I7.hcg: Ser…"
    assert display_user(f"{ISS}/Practitioner/1", ISS) == "Practitioner/1"
    assert display_user("Practitioner/1", ISS) == "Practitioner/1"


def test_number_formatting() -> None:
    assert number(118.0) == "118"
    assert number(11.8) == "11.8"
    assert number(0.000123) == "0.000123"
    assert number(1 / 3) == "0.333333"


def test_patient_banner() -> None:
    resource = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [
            {"use": "usual", "given": ["Mei"]},
            {"use": "official", "family": "Lin", "given": ["Mei", "Y."]},
        ],
        "birthDate": "1987-09-30",
        "gender": "female",
    }
    assert patient_banner(resource) == {
        "name": "Mei Y. Lin",
        "birth_date": "1987-09-30",
        "gender": "female",
        "id": "p1",
    }
    assert (
        patient_banner({"resourceType": "Patient", "name": [{"text": "Lin Mei"}]})["name"]
        == "Lin Mei"
    )
    assert patient_banner(None)["name"] is None


def test_explain_puts_the_status_reason_first_and_apart() -> None:
    trial = load_nct()
    result = _result("Patient/d", {}, status="ineligible", score=0.0)
    result.status_reason = "deceased on 2026-10-01 (Patient.deceasedDateTime): not a candidate"
    first = explain(result, trial)[0]
    assert first.startswith("Ineligible: deceased on 2026-10-01")
    assert "do not decide" in first


def test_csv_carries_the_mrn_identifiers_and_status_reason() -> None:
    trial = load_nct()
    result = _result("Patient/d", {}, status="ineligible", score=0.0)
    result.status_reason = "deceased on 2026-10-01 (Patient.deceasedDateTime): not a candidate"
    result.patient = PatientSummary(
        "Patient/d",
        36,
        "female",
        identifiers=(
            Identifier("ZY1", "http://h/mrn", "MR", "住院号"),
            Identifier("9", None, None, "card"),
        ),
        mrn="ZY1",
        deceased=True,
        deceased_date=date(2026, 10, 1),
    )
    rows = list(csv.DictReader(io.StringIO(candidates_csv(trial, rank([result])))))
    assert rows[0]["mrn"] == "ZY1"
    assert rows[0]["identifiers"] == "MR ZY1; card 9"
    assert rows[0]["status_reason"] == result.status_reason
    assert rows[0]["status"] == "ineligible"


def test_the_checklist_tells_an_ineligible_patient_why_not_what_to_order() -> None:
    out = _result(
        "Patient/a", {"I6.hgb": "fail", "I6.lvef": "unknown"}, status="ineligible", score=0
    )
    out.next_steps = ["I6.lvef: Order an echocardiogram (LVEF). (no result)"]
    out.next_step = result_next_step(out)
    assert out.next_step == "fails I6.hgb: why"
    assert checklist(out, ISS).next_steps == ["fails I6.hgb: why"]
    open_ = _result("Patient/b", {"I6.lvef": "unknown"}, status="possibly_eligible", score=0.9)
    open_.next_steps = ["I6.lvef: Order an echocardiogram (LVEF). (no result)"]
    open_.next_step = result_next_step(open_)
    assert checklist(open_, ISS).next_steps == open_.next_steps
    assert next_check(open_) == open_.next_steps[0]
