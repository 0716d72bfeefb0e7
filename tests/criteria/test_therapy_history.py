"""I4: glucocorticoids >= 1 mg/kg/day (prednisone equivalent) + cyclophosphamide + a listed
immunosuppressant for > 6 months. A component not documented is `unknown`, never `fail`:
treatment may have been given at another hospital.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.criteria.common import Context
from service.criteria.model import TherapyHistoryRule
from service.criteria.therapy_history import evaluate_therapy_history, is_intravenous
from service.criteria.verdict import Verdict
from service.facts import PatientFacts
from service.mappers import map_resource
from service.terminology import Terminology
from tests.conftest import AS_OF, PATIENT, ROOT, load_nct, run
from tests.factories import (
    ATC,
    AZATHIOPRINE,
    CYCLOPHOSPHAMIDE,
    METHYLPREDNISOLONE,
    MYCOPHENOLATE,
    PREDNISONE,
    PREDNISONE_5MG_TAB,
    RXNORM,
    UCUM,
    WEIGHT,
    contained_request,
    medication,
    obs,
)
from tests.medication_terms import terms_with

BELIMUMAB = "1092437"

# Treatment within the last year, with the weight measured when it began: the dose per kg is
# the same whether it is read with the weight at the time or the latest weight (see report).
START = date(2026, 1, 10)


def weight(kg: float, unit: str = "kg", on: date = START) -> dict[str, Any]:
    return obs(WEIGHT, kg, unit, days=(AS_OF - on).days)


def steroid(dose: float, per_day: int = 1, code: str = PREDNISONE, **kwargs: Any) -> dict[str, Any]:
    return medication(
        code, start=START, end=date(2026, 3, 10), dose_mg=dose, per_day=per_day, **kwargs
    )


def cyclophosphamide() -> dict[str, Any]:
    return medication(CYCLOPHOSPHAMIDE, start=date(2026, 2, 1), end=date(2026, 2, 1), dose_mg=500)


def immunosuppressant(end: date, start: date = START, code: str = MYCOPHENOLATE) -> dict[str, Any]:
    return medication(code, start=start, end=end, dose_mg=1000, per_day=2)


MORE_THAN_6_MONTHS = date(2026, 7, 11)  # START + 6 months + 1 day
EXACTLY_6_MONTHS = date(2026, 7, 10)


def full(**replace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts = {
        "weight": [weight(60)],
        "steroid": [steroid(60)],
        "cyclophosphamide": [cyclophosphamide()],
        "immunosuppressant": [immunosuppressant(MORE_THAN_6_MONTHS)],
    }
    parts.update(replace)
    return [resource for group in parts.values() for resource in group]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(full(), "pass", id="prednisone-60-mg-60-kg-is-1.0-mg/kg/day-pass"),
        pytest.param(
            full(steroid=[steroid(59.4)]), "unknown", id="prednisone-0.99-mg/kg/day-unknown"
        ),
        pytest.param(
            full(steroid=[steroid(30, per_day=2)]), "pass", id="prednisone-30-mg-2x/day-pass"
        ),
        pytest.param(
            full(steroid=[steroid(48, code=METHYLPREDNISOLONE)]),
            "pass",
            id="methylprednisolone-48-mg-is-60-prednisone-pass",
        ),
        pytest.param(
            full(steroid=[steroid(47, code=METHYLPREDNISOLONE)]),
            "unknown",
            id="methylprednisolone-47-mg-is-58.75-prednisone-unknown",
        ),
        pytest.param(
            full(weight=[weight(132.27735731092653, "[lb_av]")]),
            "pass",
            id="weight-132.28-lb-is-60-kg-pass",
        ),
        pytest.param(full(weight=[weight(61)]), "unknown", id="prednisone-60-mg-61-kg-unknown"),
        pytest.param(full(weight=[]), "unknown", id="no-weight-unknown"),
        pytest.param(full(steroid=[steroid(60, per_day=None)]), "unknown", id="no-timing-unknown"),
        pytest.param(full(steroid=[]), "unknown", id="no-glucocorticoid-unknown"),
        pytest.param(full(cyclophosphamide=[]), "unknown", id="no-cyclophosphamide-unknown"),
        pytest.param(full(immunosuppressant=[]), "unknown", id="no-immunosuppressant-unknown"),
        pytest.param(
            full(immunosuppressant=[immunosuppressant(EXACTLY_6_MONTHS)]),
            "unknown",
            id="immunosuppressant-exactly-6-months-unknown",
        ),
        pytest.param(
            full(
                immunosuppressant=[
                    immunosuppressant(date(2026, 4, 30)),
                    immunosuppressant(MORE_THAN_6_MONTHS, date(2026, 5, 1), AZATHIOPRINE),
                ]
            ),
            "pass",
            id="consecutive-mmf-then-azathioprine-over-6-months-pass",
        ),
        pytest.param(
            full(
                immunosuppressant=[
                    immunosuppressant(date(2026, 4, 1)),
                    immunosuppressant(MORE_THAN_6_MONTHS, date(2026, 5, 1), AZATHIOPRINE),
                ]
            ),
            "unknown",
            id="courses-with-a-gap-do-not-add-up-unknown",
        ),
        pytest.param([], "unknown", id="no-medication-record-unknown-never-fail"),
    ],
)
def test_i4_therapy_history(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I4")
    assert result.verdict == expected, result.reason


def test_i4_never_fails_on_missing_components() -> None:
    result = run([], "I4")
    assert result.verdict == "unknown"
    assert "no record of cyclophosphamide" in result.reason


def test_i4_open_ended_active_immunosuppressant_runs_to_as_of() -> None:
    active = medication(MYCOPHENOLATE, start=date(2026, 5, 26), status="active", dose_mg=500)
    result = run(full(immunosuppressant=[active]), "I4")
    assert result.verdict == "pass"  # 26 May to 27 Nov 2026: 6 months and 1 day


def test_i4_open_ended_active_immunosuppressant_of_exactly_6_months() -> None:
    active = medication(MYCOPHENOLATE, start=date(2026, 5, 27), status="active", dose_mg=500)
    assert run(full(immunosuppressant=[active]), "I4").verdict == "unknown"


def test_i4_dose_shows_the_arithmetic() -> None:
    result = run(full(), "I4")
    rules = [e.rule for e in result.evidence if e.rule]
    assert any("60 mg/day x 1 (prednisone equivalent) / 60 kg = 1 mg/kg/day" in r for r in rules)


def test_i4_dose_in_tablets_with_strength() -> None:
    tablets = steroid(6, per_day=2, code=PREDNISONE_5MG_TAB, dose_unit="{tablet}")
    assert run(full(steroid=[tablets]), "I4").verdict == "pass"  # 6 x 5 mg x 2 = 60 mg


def test_i4_dose_in_tablets_below_threshold() -> None:
    tablets = steroid(5, per_day=2, code=PREDNISONE_5MG_TAB, dose_unit="{tablet}")
    assert run(full(steroid=[tablets]), "I4").verdict == "unknown"  # 50 mg


def test_i4_glucocorticoid_order_with_contained_medication() -> None:
    order = contained_request(
        (RXNORM, PREDNISONE),
        dose={"value": 30, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
        frequency=2,
        start=START,
        end=date(2026, 3, 10),
    )
    assert run(full(steroid=[order]), "I4").verdict == "pass"


def test_i4_treatment_after_as_of_is_not_counted() -> None:
    later = medication(CYCLOPHOSPHAMIDE, start=date(2026, 12, 1), end=date(2026, 12, 1))
    assert run(full(cyclophosphamide=[later]), "I4").verdict == "unknown"


# --- records as hospital systems send them (tests/data/realworld) ----------------------------

REALWORLD = ROOT / "tests" / "data" / "realworld"
IV_ROUTE = {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]}


def scenario(name: str) -> list[dict[str, Any]]:
    bundle = json.loads((REALWORLD / f"{name}.json").read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


def administration(
    code: tuple[str, str],
    day: date,
    dose_mg: float,
    *,
    route: dict[str, Any] | None = None,
    at: str = "T09:00:00+08:00",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": f"ma-{code[1]}-{day.isoformat()}-{at[1:3]}",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": code[0], "code": code[1]}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": day.isoformat() + at,
        "dosage": {"dose": {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}},
    }
    if route is not None:
        resource["dosage"]["route"] = route
    return resource


def every(days: int, start: date, count: int) -> list[date]:
    return [start + timedelta(days=days * i) for i in range(count)]


def run_with(terms: Terminology, resources: list[dict[str, Any]]) -> Verdict:
    facts = PatientFacts(PATIENT)
    for resource in resources:
        mapped = map_resource(resource, terms)
        if mapped is not None:
            facts.add(mapped.fact)
    ctx = Context(AS_OF, terms, "NCT06946485", 90)
    rule = load_nct().criterion("I4").rule
    assert isinstance(rule, TherapyHistoryRule)
    return evaluate_therapy_history(rule, facts, ctx)


def test_iv_cyclophosphamide_administrations_document_cyclophosphamide() -> None:
    cyc = scenario("iv-cyclophosphamide-monthly-administrations")
    result = run(full(cyclophosphamide=cyc), "I4")
    assert result.verdict == "pass", result.reason
    cited = {e.reference for e in result.evidence}
    assert "MedicationAdministration/cyc-1" in cited


def test_rituximab_two_infusions_14_days_apart_alone_is_not_6_months() -> None:
    rtx = scenario("rituximab-two-infusions-14-days-apart")
    result = run(full(immunosuppressant=rtx), "I4")
    assert result.verdict == "unknown"
    # one course: 10 January + 14 days + 60 days counted for the last dose
    assert "longest documented course 2026-01-10 to 2026-03-24" in result.reason


def test_rituximab_course_then_mycophenolate_adds_up() -> None:
    rtx = scenario("rituximab-two-infusions-14-days-apart")
    mmf = immunosuppressant(MORE_THAN_6_MONTHS, start=date(2026, 3, 25))
    result = run(full(immunosuppressant=[*rtx, mmf]), "I4")
    assert result.verdict == "pass", result.reason
    assert "2026-01-10 to 2026-07-11" in result.reason


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        pytest.param((60, 60, 60), "pass", id="belimumab-every-60-days-is-one-course-pass"),
        pytest.param((60, 61, 60), "unknown", id="one-gap-of-61-days-splits-it-unknown"),
    ],
)
def test_infusions_no_more_than_60_days_apart_form_one_course(
    gaps: tuple[int, ...], expected: str
) -> None:
    days = [START]
    for gap in gaps:
        days.append(days[-1] + timedelta(days=gap))
    doses = [administration((RXNORM, BELIMUMAB), day, 600, route=IV_ROUTE) for day in days]
    result = run(full(immunosuppressant=doses), "I4")
    assert result.verdict == expected, result.reason


def test_a_single_infusion_counts_for_the_interval_only() -> None:
    dose = administration((RXNORM, BELIMUMAB), START, 600, route=IV_ROUTE)
    result = run(full(immunosuppressant=[dose]), "I4")
    assert result.verdict == "unknown"
    assert "2026-01-10 to 2026-03-10" in result.reason  # 60 days, the dose day included


def test_the_interval_does_not_stretch_oral_records() -> None:
    """A daily oral drug with a recorded end is not extended by the infusion interval."""
    short = immunosuppressant(date(2026, 6, 1))
    result = run(full(immunosuppressant=[short]), "I4")
    assert "longest documented course 2026-01-10 to 2026-06-01" in result.reason


def test_infusions_after_as_of_do_not_count() -> None:
    doses = [
        administration((RXNORM, BELIMUMAB), day, 600, route=IV_ROUTE)
        for day in every(28, date(2026, 6, 1), 8)
    ]
    result = run(full(immunosuppressant=doses), "I4")
    assert result.verdict == "unknown"  # 1 June to 27 November (as of): not more than 6 months


def test_iv_methylprednisolone_pulse_alone_is_not_1_mg_per_kg_day() -> None:
    pulse = scenario("methylprednisolone-iv-pulse-3-days")
    result = run(full(steroid=pulse), "I4")
    assert result.verdict == "unknown"
    assert "only a glucocorticoid pulse documented (not counted)" in result.reason
    flagged = [e for e in result.evidence if e.note and e.note.startswith("pulse")]
    assert {e.reference for e in flagged} == {
        f"MedicationAdministration/mp-pulse-{i}" for i in (1, 2, 3)
    }


def test_pulse_then_oral_prednisone_passes_and_shows_the_pulse() -> None:
    pulse = scenario("methylprednisolone-iv-pulse-3-days")
    result = run(full(steroid=[*pulse, steroid(60)]), "I4")
    assert result.verdict == "pass", result.reason
    assert any(e.note and e.note.startswith("pulse") for e in result.evidence)


def test_four_days_of_iv_methylprednisolone_is_not_a_pulse() -> None:
    days = every(1, date(2026, 1, 5), 4)
    doses = [administration((ATC, "H02AB04"), day, 500, route=IV_ROUTE) for day in days]
    result = run(full(steroid=doses), "I4")
    assert result.verdict == "pass", result.reason  # 625 mg prednisone / 60 kg


def test_iv_methylprednisolone_in_mg_by_ingredient_code() -> None:
    """IV, not a pulse (80 mg a day for 10 days), dose in mg: 80 x 1.25 / 60 = 1.67."""
    doses = [
        administration((RXNORM, METHYLPREDNISOLONE), day, 80, route=IV_ROUTE)
        for day in every(1, date(2026, 1, 5), 10)
    ]
    result = run(full(steroid=doses), "I4")
    assert result.verdict == "pass", result.reason
    assert "1.67 mg/kg/day" in result.reason


def test_one_high_dose_without_a_route_is_a_pulse() -> None:
    dose = administration((ATC, "H02AB04"), date(2026, 1, 5), 1000)
    assert run(full(steroid=[dose]), "I4").verdict == "unknown"


@pytest.mark.parametrize(
    ("mg", "expected"),
    [
        pytest.param(200, "unknown", id="mp-200-mg-is-250-prednisone-pulse-unknown"),
        pytest.param(199, "pass", id="mp-199-mg-is-248.75-prednisone-not-a-pulse-pass"),
    ],
)
def test_pulse_dose_boundary_without_route(mg: float, expected: str) -> None:
    dose = administration((ATC, "H02AB04"), date(2026, 1, 5), mg)
    assert run(full(steroid=[dose]), "I4").verdict == expected


def test_oral_prednisone_1_mg_per_kg_for_3_days_is_not_a_pulse() -> None:
    short = medication(PREDNISONE, start=START, end=START + timedelta(days=2), dose_mg=60)
    assert run(full(steroid=[short]), "I4").verdict == "pass"


def test_administrations_of_one_day_are_summed() -> None:
    oral = {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}], "text": "PO"}
    morning = administration((RXNORM, PREDNISONE), START, 30, route=oral, at="T08:00:00+08:00")
    evening = administration((RXNORM, PREDNISONE), START, 30, route=oral, at="T16:00:00+08:00")
    assert run(full(steroid=[morning, evening]), "I4").verdict == "pass"  # 60 mg that day
    assert run(full(steroid=[morning]), "I4").verdict == "unknown"  # 30 mg


def test_clinical_drug_tablets_written_tab() -> None:
    tablets = steroid(12, code=PREDNISONE_5MG_TAB, dose_unit="TAB")
    assert run(full(steroid=[tablets]), "I4").verdict == "pass"  # 12 x 5 mg


def test_a_clinical_drug_the_equivalents_table_lacks_rolls_up(tmp_path: Path) -> None:
    """An expansion adds injectable clinical drugs; the potency comes from their ingredient."""
    terms = terms_with(
        tmp_path,
        {},
        rows={
            "glucocorticoids": [
                (RXNORM, "9990001", "methylprednisolone sodium succinate 40 MG Injection")
            ]
        },
    )
    doses = [
        administration((RXNORM, "9990001"), day, 80, route=IV_ROUTE)
        for day in every(1, date(2026, 1, 5), 10)
    ]
    result = run_with(terms, [*full(steroid=doses)])
    assert result.verdict == "pass", result.reason


@pytest.fixture(scope="module")
def open_list_terms(tmp_path_factory: pytest.TempPathFactory) -> Terminology:
    """Anifrolumab and obinutuzumab as rows of sle_immunosuppressants (the protocol's "e.g."
    list is open; the data engineer adds them to the shipped set), review terms in Chinese."""
    return terms_with(
        tmp_path_factory.mktemp("open"),
        {"sle_immunosuppressants": {"review_terms": {"en": ["rituximab"], "zh": ["利妥昔单抗"]}}},
        rows={
            "sle_immunosuppressants": [
                (ATC, "L04AG11", "anifrolumab"),
                (ATC, "L01FA03", "obinutuzumab"),
            ]
        },
    )


@pytest.mark.parametrize("code", ["L04AG11", "L01FA03"], ids=["anifrolumab", "obinutuzumab"])
def test_open_biologics_list(open_list_terms: Terminology, code: str) -> None:
    doses = [administration((ATC, code), day, 300, route=IV_ROUTE) for day in every(28, START, 8)]
    result = run_with(open_list_terms, full(immunosuppressant=doses))
    assert result.verdict == "pass", result.reason


def test_unmapped_rituximab_is_review_never_pass(open_list_terms: Terminology) -> None:
    local = scenario("rituximab-local-code-chinese-text")
    result = run_with(open_list_terms, full(immunosuppressant=local))
    assert result.verdict == "unknown"
    assert "possible a listed immunosuppressant for >6 months: '利妥昔单抗注射液" in result.reason
    assert "not in the value set): review" in result.reason
    assert any(e.reference == "MedicationAdministration/rtx-local-1" for e in result.evidence)


def test_no_review_note_when_nothing_suggests_the_drug(open_list_terms: Terminology) -> None:
    result = run_with(open_list_terms, full(immunosuppressant=[]))
    assert result.verdict == "unknown"
    assert "possible" not in result.reason


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("Intravenous route", True),
        ("47625008", True),
        ("IV", True),
        ("ivgtt", True),
        ("静脉滴注", True),
        ("Oral", False),
        ("Subcutaneous route", False),
        ("Intravitreal", False),
        (None, False),
    ],
)
def test_is_intravenous(route: str | None, expected: bool) -> None:
    assert is_intravenous(route) is expected


def test_hydroxychloroquine_statement_as_a_chinese_hospital_sends_it() -> None:
    """ATC code beside a local code, Chinese text, month-precision dates."""
    statement = {
        "resourceType": "MedicationStatement",
        "id": "hcq-1",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [
                {"system": "http://hospital.example.cn/fhir/CodeSystem/drug", "code": "KF-2231"},
                {"system": ATC, "code": "P01BA02", "display": "hydroxychloroquine"},
            ],
            "text": "硫酸羟氯喹片 0.2g",
        },
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2025-03", "end": "2025-11"},
        "dosage": [{"text": "0.2g 口服 每日两次"}],
    }
    result = run(full(immunosuppressant=[statement]), "I4")
    assert result.verdict == "pass", result.reason
    # month-precision dates: only the months surely covered, shown as written
    assert "2025-03 to 2025-11" in result.reason


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        pytest.param(3, "unknown", id="3-days-is-a-pulse-unknown"),
        pytest.param(4, "pass", id="4-days-is-not-a-pulse-pass"),
    ],
)
def test_an_iv_course_ordered_as_one_request(days: int, expected: str) -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "mp-pulse-order",
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": METHYLPREDNISOLONE}],
            "text": "methylprednisolone sodium succinate 500 mg IV daily x 3 days",
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-01-05T07:30:00+08:00",
        "dosageInstruction": [
            {
                "timing": {
                    "repeat": {
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                        "boundsDuration": {"value": days, "unit": "days", "code": "d"},
                    }
                },
                "route": {"text": "IV"},
                "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg", "code": "mg"}}],
            }
        ],
    }
    result = run(full(steroid=[order]), "I4")
    assert result.verdict == expected, result.reason


def cyclophosphamide_request(**fields: Any) -> dict[str, Any]:
    """A cyclophosphamide order as an EHR sends it, with `fields` changed."""
    resource = medication(
        CYCLOPHOSPHAMIDE, start=date(2026, 2, 1), kind="MedicationRequest", status="active"
    )
    resource["authoredOn"] = "2026-02-01T09:30:00+08:00"
    return resource | fields


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        pytest.param({"intent": "order"}, "pass", id="order-pass"),
        pytest.param({"intent": "order", "doNotPerform": True}, "unknown", id="do-not-perform"),
        pytest.param({"intent": "proposal"}, "unknown", id="proposal-unknown"),
        pytest.param({"intent": "option"}, "unknown", id="option-unknown"),
    ],
)
def test_i4_cyclophosphamide_only_counts_when_ordered(
    request_fields: dict[str, Any], expected: str
) -> None:
    resources = full(cyclophosphamide=[cyclophosphamide_request(**request_fields)])
    result = run(resources, "I4")
    assert result.verdict == expected, result.reason
