"""MedicationStatement / MedicationRequest -> MedicationExposure: codes, status, period, dose."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.criteria.common import unidentified
from service.facts import MedicationExposure
from service.mappers import MappingError, MedicationTable, map_resource
from service.sources import bundle_entries
from service.terminology import Terminology
from tests.factories import (
    ATC,
    CYCLOPHOSPHAMIDE,
    FILGRASTIM,
    METHYLPREDNISOLONE,
    MYCOPHENOLATE,
    PREDNISONE,
    PREDNISONE_5MG_TAB,
    RXNORM,
    UCUM,
    by_reference,
    contained_request,
    medication,
    medication_resource,
)
from tests.medication_terms import terms_with

START = date(2024, 1, 10)


def exposure(
    resource: dict[str, Any], terms: Terminology, medications: MedicationTable | None = None
) -> MedicationExposure:
    mapped = map_resource(resource, terms, medications=medications)
    assert mapped is not None
    assert isinstance(mapped.fact, MedicationExposure)
    return mapped.fact


def mg(value: float, unit: str = "mg") -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


@pytest.mark.parametrize("kind", ["MedicationStatement", "MedicationRequest"])
def test_maps_code_period_dose_and_timing(terms: Terminology, kind: str) -> None:
    resource = medication(
        PREDNISONE, start=START, end="2024-03-10", dose_mg=30, per_day=2, kind=kind, status="active"
    )
    found = exposure(resource, terms)
    assert found.reference == f"{kind}/{resource['id']}"
    assert "glucocorticoids" in found.concepts
    assert (found.start, found.end) == (START, date(2024, 3, 10))
    assert found.dose is not None
    assert (found.dose.value, found.dose.unit) == (30, "mg")
    assert found.doses_per_day == 2.0  # timing 2x/day
    assert found.daily_dose_mg == 60.0
    assert found.prednisone_factor == 1.0


def test_methylprednisolone_prednisone_equivalent(terms: Terminology) -> None:
    found = exposure(medication(METHYLPREDNISOLONE, start=START, dose_mg=16), terms)
    assert found.prednisone_factor == pytest.approx(1.25)


def test_non_glucocorticoid_has_no_prednisone_factor(terms: Terminology) -> None:
    assert (
        exposure(medication(MYCOPHENOLATE, start=START, dose_mg=1000), terms).prednisone_factor
        is None
    )


def test_atc_codes_are_hierarchical(terms: Terminology) -> None:
    # L01AA01 cyclophosphamide; the value set may list the substance or its group.
    assert "cyclophosphamide" in exposure(medication("L01AA01", ATC, start=START), terms).concepts


def test_contained_medication_ingredient_is_read(terms: Terminology) -> None:
    resource = contained_request((RXNORM, PREDNISONE), dose=mg(20), frequency=3, start=START)
    found = exposure(resource, terms)
    assert "glucocorticoids" in found.concepts
    assert found.daily_dose_mg == 60.0


def test_missing_contained_medication_raises(terms: Terminology) -> None:
    resource = contained_request((RXNORM, PREDNISONE), dose=mg(20), start=START)
    resource["medicationReference"] = {"reference": "#other"}
    with pytest.raises(MappingError, match=f"^MedicationRequest/{resource['id']}: .*#other"):
        map_resource(resource, terms)


# --- medications named by reference (Medication resources sent apart) ------------------


def referenced(reference: str = "Medication/med1", **kwargs: Any) -> dict[str, Any]:
    """A prednisone order that names its drug by reference, as Epic and Cerner send it."""
    order = medication(PREDNISONE, start=START, kind="MedicationRequest", status="active", **kwargs)
    return by_reference(order, reference)


@pytest.mark.parametrize(
    "reference",
    [
        "Medication/med1",
        "https://ehr.example.org/fhir/Medication/med1",  # the server's absolute form
        "Medication/med1/_history/3",
        "https://ehr.example.org/fhir/Medication/med1/_history/3",
    ],
)
def test_a_referenced_medication_is_read_as_a_contained_one(
    terms: Terminology, reference: str
) -> None:
    table = MedicationTable([medication_resource("med1", PREDNISONE)])
    order = referenced(reference, dose_mg=20, per_day=3)
    found = exposure(order, terms, table)
    assert "glucocorticoids" in found.concepts
    assert found.codes[0].code == PREDNISONE
    assert (found.daily_dose_mg, found.prednisone_factor, found.unresolved) == (60.0, 1.0, None)
    # exactly what the same drug as a contained Medication gives
    contained = contained_request((RXNORM, PREDNISONE), dose=mg(20), frequency=3, start=START)
    assert exposure(contained, terms).concepts == found.concepts


def test_a_referenced_medication_s_ingredient_is_read(terms: Terminology) -> None:
    table = MedicationTable([medication_resource("med1", CYCLOPHOSPHAMIDE, ingredient=True)])
    found = exposure(referenced(), terms, table)
    assert "cyclophosphamide" in found.concepts
    assert found.text == "local brand, no standard code"


def test_a_bundle_full_url_finds_its_medication(terms: Terminology) -> None:
    table = MedicationTable()
    table.add(medication_resource("med1", PREDNISONE), full_url="urn:uuid:5c2d7e")
    assert "glucocorticoids" in exposure(referenced("urn:uuid:5c2d7e"), terms, table).concepts


def test_a_bundle_s_urn_uuid_reference_is_made_relative() -> None:
    """Every Bundle reader (files, Spark, /match, screen_patient) resolves urn:uuid alike."""
    order = referenced("urn:uuid:5c2d7e")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:5c2d7e", "resource": {"resourceType": "Medication"}},
            {"fullUrl": "urn:uuid:0a1b", "resource": order},
        ],
    }
    (medicine, _, _), (record, _, _) = bundle_entries(bundle, "b.json")
    assert medicine == {"resourceType": "Medication", "id": "5c2d7e"}
    assert record is not None
    assert record["medicationReference"] == {"reference": "Medication/5c2d7e"}
    assert order["medicationReference"] == {"reference": "urn:uuid:5c2d7e"}  # not changed


def test_an_unavailable_medication_is_an_unknown_drug_not_no_record(terms: Terminology) -> None:
    """Unmapped is not absent: the record is kept, with no codes, and says what is missing."""
    for table in (None, MedicationTable([medication_resource("other", PREDNISONE)])):
        found = exposure(referenced("Medication/123"), terms, table)
        assert (found.codes, found.concepts, found.review) == ((), frozenset(), frozenset())
        assert found.unresolved == "Medication/123 (not sent with the records)"
        assert (found.start, found.status) == (START, "active")
        assert unidentified(found)


def test_an_unavailable_medication_says_why(terms: Terminology) -> None:
    table = MedicationTable()
    table.unavailable("Medication/123", "could not be fetched: FHIR server answered 503")
    found = exposure(referenced("Medication/123"), terms, table)
    assert found.unresolved == "Medication/123 (could not be fetched: FHIR server answered 503)"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ({"identifier": {"value": "NDC-1"}}, "a Medication by identifier or display only"),
        ({"reference": "Medication?code=8640"}, "not a reference to a Medication by id"),
        ({"reference": "urn:uuid:77"}, "urn:uuid:77 (not in the Bundle)"),
    ],
)
def test_a_reference_that_names_no_medication_by_id_is_an_unknown_drug(
    terms: Terminology, target: dict[str, Any], why: str
) -> None:
    order = referenced() | {"medicationReference": target}
    found = exposure(order, terms, MedicationTable())
    assert why in str(found.unresolved)


def test_a_medication_sent_in_two_readings_is_unknown_in_any_order(terms: Terminology) -> None:
    prednisone = medication_resource("med1", PREDNISONE)
    other = medication_resource("med1", CYCLOPHOSPHAMIDE)
    for pair in ([prednisone, other], [other, prednisone]):
        found = exposure(referenced(), terms, MedicationTable(pair))
        assert found.concepts == frozenset()
        assert "versions that read differently" in str(found.unresolved)


def test_the_same_medication_sent_twice_is_read(terms: Terminology) -> None:
    first = medication_resource("med1", PREDNISONE, meta={"versionId": "1"})
    second = medication_resource("med1", PREDNISONE, meta={"versionId": "2"})
    table = MedicationTable()
    table.add(first)
    table.add_line("Medication/med1", json.dumps(second).encode())
    assert "glucocorticoids" in exposure(referenced(), terms, table).concepts


def test_a_medication_entered_in_error_is_not_read(terms: Terminology) -> None:
    table = MedicationTable([medication_resource("med1", PREDNISONE, status="entered-in-error")])
    found = exposure(referenced(), terms, table)
    assert found.unresolved == "Medication/med1 (entered in error)"


def test_a_patient_s_own_medication_wins_over_the_population_s(terms: Terminology) -> None:
    population = MedicationTable([medication_resource("med1", CYCLOPHOSPHAMIDE)])
    own = MedicationTable([medication_resource("med1", PREDNISONE)], parent=population)
    assert "glucocorticoids" in exposure(referenced(), terms, own).concepts
    empty = MedicationTable(parent=population)
    assert "cyclophosphamide" in exposure(referenced(), terms, empty).concepts


def test_an_unknown_drug_with_a_status_that_does_not_count_is_dropped(
    terms: Terminology,
) -> None:
    assert map_resource(referenced() | {"status": "cancelled"}, terms) is None


@pytest.mark.parametrize("kind", ["MedicationStatement", "MedicationRequest"])
def test_missing_medication_raises_mapping_error(terms: Terminology, kind: str) -> None:
    resource = medication(PREDNISONE, start=START, kind=kind)
    del resource["medicationCodeableConcept"]
    with pytest.raises(MappingError, match=f"^{kind}/{resource['id']}: .*medication"):
        map_resource(resource, terms)


@pytest.mark.parametrize(
    ("dose", "per_day", "code", "daily"),
    [
        pytest.param(
            mg(6, "{tablet}"), 2, PREDNISONE_5MG_TAB, 60.0, id="6-tablets-of-5-mg-2x/day-is-60-mg"
        ),
        pytest.param(mg(2, "{tbl}"), 1, PREDNISONE_5MG_TAB, 10.0, id="tbl-annotation"),
        pytest.param(
            {"value": 3, "unit": "tablet"}, 1, PREDNISONE_5MG_TAB, 15.0, id="tablet-free-text-unit"
        ),
        pytest.param(mg(2, "{tablet}"), 1, PREDNISONE, None, id="tablets-of-unknown-strength"),
        pytest.param(mg(0.5, "g"), 2, PREDNISONE, 1000.0, id="g-to-mg"),
        pytest.param(mg(500, "ug"), 1, PREDNISONE, 0.5, id="ug-to-mg"),
        pytest.param(mg(5, "mL"), 1, PREDNISONE, None, id="volume-without-concentration"),
    ],
)
def test_daily_dose(
    terms: Terminology, dose: dict[str, Any], per_day: int, code: str, daily: float | None
) -> None:
    resource = medication(code, start=START, per_day=per_day)
    resource["dosage"] = [{**resource["dosage"][0], "doseAndRate": [{"doseQuantity": dose}]}]
    found = exposure(resource, terms)
    assert found.daily_dose_mg == (pytest.approx(daily) if daily is not None else None)


@pytest.mark.parametrize(
    ("repeat", "per_day"),
    [
        pytest.param({"frequency": 2, "period": 1, "periodUnit": "d"}, 2.0, id="2x-per-day"),
        pytest.param({"frequency": 1, "period": 12, "periodUnit": "h"}, 2.0, id="every-12-hours"),
        pytest.param({"frequency": 1, "period": 8, "periodUnit": "h"}, 3.0, id="every-8-hours"),
        pytest.param({"frequency": 1, "period": 1, "periodUnit": "wk"}, 1 / 7, id="weekly"),
        pytest.param({"frequency": 1, "period": 2, "periodUnit": "d"}, 0.5, id="every-other-day"),
        pytest.param({"periodUnit": "d"}, 1.0, id="defaults-once-a-day"),
    ],
)
def test_doses_per_day(terms: Terminology, repeat: dict[str, Any], per_day: float) -> None:
    resource = medication(PREDNISONE, start=START, dose_mg=10)
    resource["dosage"][0]["timing"] = {"repeat": repeat}
    assert exposure(resource, terms).doses_per_day == pytest.approx(per_day)


@pytest.mark.parametrize(
    "repeat",
    [
        pytest.param({"frequency": "twice", "period": 1, "periodUnit": "d"}, id="frequency-text"),
        pytest.param({"frequency": 1, "period": 1, "periodUnit": "fortnight"}, id="unit-not-ucum"),
    ],
)
def test_unreadable_timing_raises(terms: Terminology, repeat: dict[str, Any]) -> None:
    resource = medication(PREDNISONE, start=START, dose_mg=10)
    resource["dosage"][0]["timing"] = {"repeat": repeat}
    with pytest.raises(MappingError, match="timing"):
        map_resource(resource, terms)


def test_dose_value_as_string_raises(terms: Terminology) -> None:
    resource = medication(PREDNISONE, start=START, dose_mg=10)
    resource["dosage"][0]["doseAndRate"][0]["doseQuantity"]["value"] = "10"
    with pytest.raises(
        MappingError, match=f"^MedicationStatement/{resource['id']}: .*not a number"
    ):
        map_resource(resource, terms)


@pytest.mark.parametrize("status", ["entered-in-error", "not-taken", "intended", "unknown"])
def test_statement_statuses_that_do_not_count(terms: Terminology, status: str) -> None:
    assert map_resource(medication(PREDNISONE, start=START, status=status), terms) is None


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "draft", "unknown"])
def test_request_statuses_that_do_not_count(terms: Terminology, status: str) -> None:
    resource = medication(PREDNISONE, start=START, status=status, kind="MedicationRequest")
    assert map_resource(resource, terms) is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"doNotPerform": True}, id="do-not-perform"),
        pytest.param({"intent": "proposal"}, id="proposal"),
        pytest.param({"intent": "option"}, id="option"),
    ],
)
def test_requests_that_order_nothing_do_not_count(
    terms: Terminology, change: dict[str, Any]
) -> None:
    resource = medication(CYCLOPHOSPHAMIDE, start=START, status="active", kind="MedicationRequest")
    assert map_resource(resource | change, terms) is None


@pytest.mark.parametrize("intent", ["order", "plan", "original-order", "instance-order"])
def test_request_intents_that_count(terms: Terminology, intent: str) -> None:
    resource = medication(CYCLOPHOSPHAMIDE, start=START, status="active", kind="MedicationRequest")
    resource |= {"intent": intent, "doNotPerform": False}
    assert exposure(resource, terms).status == "active"


@pytest.mark.parametrize("status", ["active", "completed", "stopped", "on-hold"])
def test_request_statuses_that_count(terms: Terminology, status: str) -> None:
    resource = medication(PREDNISONE, start=START, status=status, kind="MedicationRequest")
    assert exposure(resource, terms).status == status


def test_statement_effective_date_time_is_one_day(terms: Terminology) -> None:
    resource = medication(CYCLOPHOSPHAMIDE, start=START)
    del resource["effectivePeriod"]
    resource["effectiveDateTime"] = "2024-02-01T09:00:00+08:00"
    found = exposure(resource, terms)
    assert (found.start, found.end) == (date(2024, 2, 1), date(2024, 2, 1))


def test_request_end_from_expected_supply_duration(terms: Terminology) -> None:
    resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status="active")
    del resource["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    resource["dispenseRequest"] = {
        "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"}
    }
    found = exposure(resource, terms)
    # 30 days from 10 January: the last dose is taken on 8 February
    assert (found.start, found.end) == (START, date(2024, 2, 8))
    assert found.end_basis == "expectedSupplyDuration 30 days"


def test_request_start_from_authored_on(terms: Terminology) -> None:
    resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status="active")
    del resource["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    found = exposure(resource, terms)
    assert (found.start, found.end) == (START, None)


def test_route_is_read(terms: Terminology) -> None:
    resource = medication(PREDNISONE, start=START, dose_mg=10)
    resource["dosage"][0]["route"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral"}]
    }
    assert exposure(resource, terms).route == "Oral"


def test_bundled_site_map_local_drug_code_is_recognised(terms: Terminology) -> None:
    resource = medication(
        "PRED", "http://hospital.example.org/fhir/CodeSystem/drug", start=START, dose_mg=60
    )
    found = exposure(resource, terms)
    assert "glucocorticoids" in found.concepts
    assert found.prednisone_factor == 1.0  # potency found through the mapped RxNorm code


def test_drug_no_trial_uses_is_dropped(terms: Terminology) -> None:
    assert map_resource(medication("161", start=START), terms) is None  # acetaminophen


# --- MedicationAdministration / MedicationDispense, as hospital systems send them ------------

REALWORLD = Path(__file__).resolve().parents[1] / "data" / "realworld"


def scenario(name: str) -> list[dict[str, Any]]:
    bundle = json.loads((REALWORLD / f"{name}.json").read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


def test_iv_cyclophosphamide_administration(terms: Terminology) -> None:
    first = scenario("iv-cyclophosphamide-monthly-administrations")[0]
    found = exposure(first, terms)
    assert found.reference == "MedicationAdministration/cyc-1"
    assert found.resource_type == "MedicationAdministration"
    assert "cyclophosphamide" in found.concepts  # the clinical-drug code, beside a local one
    assert (found.start, found.end) == (date(2026, 2, 3), date(2026, 2, 3))
    assert found.dose is not None
    assert (found.dose.value, found.dose.unit) == (0.75, "g")
    assert found.daily_dose_mg == 750.0  # one administration is one dose on its day
    assert found.route == "Intravenous route"
    assert found.text == "注射用环磷酰胺"


def test_administration_at_a_moment(terms: Terminology) -> None:
    first = scenario("rituximab-two-infusions-14-days-apart")[0]
    found = exposure(first, terms)
    assert "sle_immunosuppressants" in found.concepts  # ATC L01FA01 beside a local code
    assert (found.start, found.end) == (date(2026, 1, 10), date(2026, 1, 10))
    assert found.text == "利妥昔单抗注射液 100mg/10ml"  # the first display: no text sent


@pytest.mark.parametrize("status", ["not-done", "entered-in-error", "unknown"])
def test_administration_statuses_that_do_not_count(terms: Terminology, status: str) -> None:
    resource = scenario("rituximab-two-infusions-14-days-apart")[0] | {"status": status}
    assert map_resource(resource, terms) is None


def test_administration_in_progress_without_end_is_open(terms: Terminology) -> None:
    resource = scenario("iv-cyclophosphamide-monthly-administrations")[0]
    resource = resource | {"status": "in-progress", "effectivePeriod": {"start": "2026-02-03"}}
    found = exposure(resource, terms)
    assert (found.start, found.end, found.status) == (date(2026, 2, 3), None, "in-progress")


def test_gcsf_dispense(terms: Terminology) -> None:
    (resource,) = scenario("gcsf-dispense-five-days")
    found = exposure(resource, terms)
    assert found.reference == "MedicationDispense/gcsf-disp-1"
    assert found.resource_type == "MedicationDispense"
    assert "gcsf" in found.concepts  # clinical-drug code
    # handed over on 10 November (its own time zone), 5 days: 10 to 14 November
    assert (found.start, found.end) == (date(2026, 11, 10), date(2026, 11, 14))
    assert found.end_basis == "daysSupply 5 days"
    assert found.route == "Subcutaneous route"


def test_dispense_end_from_quantity_and_dose_per_day(terms: Terminology) -> None:
    (resource,) = scenario("gcsf-dispense-five-days")
    del resource["daysSupply"]
    resource["quantity"] = {"value": 10, "unit": "vials"}
    found = exposure(resource, terms)
    assert found.end == date(2026, 11, 19)  # 10 vials at 1 vial a day: 10 days
    assert found.end_basis is not None
    assert found.end_basis.startswith("quantity 10 vials / 1 x 1/day = 10 days")


def test_dispense_quantity_in_other_units_than_the_dose_gives_no_end(terms: Terminology) -> None:
    (resource,) = scenario("gcsf-dispense-five-days")
    del resource["daysSupply"]
    resource["quantity"] = {"value": 5, "unit": "mL"}
    assert exposure(resource, terms).end is None  # vials and mL: not comparable


def test_dispense_without_handover_starts_when_prepared(terms: Terminology) -> None:
    (resource,) = scenario("gcsf-dispense-five-days")
    del resource["whenHandedOver"]
    assert exposure(resource, terms).start == date(2026, 11, 9)


@pytest.mark.parametrize("status", ["preparation", "cancelled", "declined", "entered-in-error"])
def test_dispense_statuses_that_do_not_count(terms: Terminology, status: str) -> None:
    (resource,) = scenario("gcsf-dispense-five-days")
    assert map_resource(resource | {"status": status}, terms) is None


def test_dispense_tablets_by_quantity(terms: Terminology) -> None:
    resource = {
        "resourceType": "MedicationDispense",
        "id": "d-pred",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": PREDNISONE_5MG_TAB}],
            "text": "泼尼松片 5mg",
        },
        "subject": {"reference": "Patient/p1"},
        "whenHandedOver": "2026-01-10T10:00:00+08:00",
        "quantity": {"value": 100, "unit": "片"},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 6, "unit": "TAB"}}],
            }
        ],
    }
    found = exposure(resource, terms)
    assert found.daily_dose_mg == 60.0  # 6 tablets x 5 mg x 2
    assert found.end == date(2026, 1, 18)  # 100 tablets / 12 a day = 8.3 days: 9 days


# --- ends a request or statement implies --------------------------------------------------


def request_without_end(**repeat: Any) -> dict[str, Any]:
    resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status="active")
    timing = resource["dosageInstruction"][0]["timing"]["repeat"]
    del timing["boundsPeriod"]
    timing.update(repeat)
    return resource


def test_end_from_bounds_duration(terms: Terminology) -> None:
    found = exposure(request_without_end(boundsDuration={"value": 2, "code": "wk"}), terms)
    assert (found.end, found.end_basis) == (date(2024, 1, 23), "dosage boundsDuration 14 days")


def test_end_from_count_at_the_timing_frequency(terms: Terminology) -> None:
    found = exposure(request_without_end(count=10, frequency=2), terms)
    assert found.end == date(2024, 1, 14)  # 10 doses at 2 a day: 5 days
    assert found.end_basis == "10 doses at 2/day: 5 days"


def test_end_from_dispense_request_quantity(terms: Terminology) -> None:
    resource = request_without_end()
    resource["dosageInstruction"][0]["doseAndRate"] = [{"doseQuantity": mg(500)}]
    resource["dispenseRequest"] = {
        "quantity": {"value": 60, "unit": "g", "system": UCUM, "code": "g"}
    }
    found = exposure(resource, terms)
    assert found.end == date(2024, 5, 8)  # 60 g / (500 mg once a day) = 120 days


def test_end_from_validity_period_last(terms: Terminology) -> None:
    resource = request_without_end()
    resource["dispenseRequest"] = {"validityPeriod": {"start": "2024-01-10", "end": "2024-07-10"}}
    found = exposure(resource, terms)
    assert (found.end, found.end_basis) == (
        date(2024, 7, 10),
        "dispenseRequest.validityPeriod end",
    )


def test_bounds_beat_supply(terms: Terminology) -> None:
    resource = request_without_end(boundsDuration={"value": 7, "unit": "days"})
    resource["dispenseRequest"] = {"expectedSupplyDuration": {"value": 30, "code": "d"}}
    assert exposure(resource, terms).end == date(2024, 1, 16)


def test_no_end_in_the_record_stays_none(terms: Terminology) -> None:
    found = exposure(request_without_end(), terms)
    assert (found.end, found.end_basis) == (None, None)


def test_active_statement_at_a_moment_is_not_one_day(terms: Terminology) -> None:
    resource = medication(MYCOPHENOLATE, start=START, status="active")
    del resource["effectivePeriod"]
    resource["effectiveDateTime"] = "2024-02-01"
    found = exposure(resource, terms)
    assert (found.start, found.end) == (date(2024, 2, 1), None)  # taking it as of that day


# --- unmapped is not absent ---------------------------------------------------------------


@pytest.fixture(scope="module")
def review_terms(tmp_path_factory: pytest.TempPathFactory) -> Terminology:
    return terms_with(
        tmp_path_factory.mktemp("review"),
        {
            "sle_immunosuppressants": {
                "review_terms": {"en": ["rituximab", "belimumab"], "zh": ["利妥昔单抗"]}
            },
            "gcsf": {"review_terms": {"en": ["filgrastim"], "zh": ["粒细胞集落刺激因子"]}},
        },
    )


def test_unknown_code_with_chinese_display_is_kept_for_review(review_terms: Terminology) -> None:
    (resource,) = scenario("rituximab-local-code-chinese-text")
    found = exposure(resource, review_terms)
    assert found.concepts == frozenset()
    assert found.review == frozenset({"sle_immunosuppressants"})
    assert found.text == "利妥昔单抗注射液(美罗华) 500mg/50ml"
    assert found.start == date(2026, 3, 2)


def test_text_only_medication_is_kept_for_review(review_terms: Terminology) -> None:
    resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status="active")
    resource["medicationCodeableConcept"] = {"text": "Neupogen (filgrastim) 480 mcg"}
    found = exposure(resource, review_terms)
    assert (found.concepts, found.review) == (frozenset(), frozenset({"gcsf"}))


def test_external_medication_reference_display_is_read_for_review(
    review_terms: Terminology,
) -> None:
    """Not available, but its display names a drug: "possible ...: review", not unknown."""
    resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status="active")
    del resource["medicationCodeableConcept"]
    resource["medicationReference"] = {"reference": "Medication/x1", "display": "RITUXIMAB 500 MG"}
    found = exposure(resource, review_terms)
    assert found.review == frozenset({"sle_immunosuppressants"})
    assert found.unresolved == "Medication/x1 (not sent with the records)"
    assert not unidentified(found)


def test_a_known_code_is_never_marked_for_review(review_terms: Terminology) -> None:
    first = scenario("rituximab-two-infusions-14-days-apart")[0]
    found = exposure(first, review_terms)
    assert "sle_immunosuppressants" in found.concepts
    assert found.review == frozenset()


def test_unknown_code_and_unmatched_text_is_dropped(review_terms: Terminology) -> None:
    (resource,) = scenario("rituximab-local-code-chinese-text")
    resource["medicationCodeableConcept"]["coding"][0]["display"] = "氨溴索注射液"  # ambroxol
    assert map_resource(resource, review_terms) is None


def test_review_record_with_a_status_that_does_not_count_is_dropped(
    review_terms: Terminology,
) -> None:
    (resource,) = scenario("rituximab-local-code-chinese-text")
    assert map_resource(resource | {"status": "not-done"}, review_terms) is None


def mmf_order_as_epic_sends_it() -> dict[str, Any]:
    """A 30-day supply with 5 refills, a clinical-drug code and tablets."""
    return {
        "resourceType": "MedicationRequest",
        "id": "mmf-order",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": RXNORM,
                    "code": "200060",
                    "display": "mycophenolate mofetil 500 MG Oral Tablet",
                }
            ],
            "text": "mycophenolate (CELLCEPT) 500 mg tablet",
        },
        "subject": {"reference": "Patient/p1", "display": "Test, Patient"},
        "authoredOn": "2026-01-10T08:41:00-06:00",
        "dosageInstruction": [
            {
                "text": "Take 2 tablets (1,000 mg total) by mouth 2 (two) times a day.",
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "route": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "26643006"}],
                    "text": "Oral",
                },
                "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
            }
        ],
        "dispenseRequest": {
            "validityPeriod": {"start": "2026-01-10", "end": "2027-01-10"},
            "numberOfRepeatsAllowed": 5,
            "quantity": {"value": 120, "unit": "tablet"},
            "expectedSupplyDuration": {"value": 30, "unit": "Day", "code": "d"},
        },
    }


def test_an_order_covers_its_refills(terms: Terminology) -> None:
    found = exposure(mmf_order_as_epic_sends_it(), terms)
    assert "sle_immunosuppressants" in found.concepts
    assert found.start == date(2026, 1, 10)
    assert found.end == date(2026, 7, 8)  # 6 fills x 30 days = 180 days
    assert found.end_basis == "expectedSupplyDuration 30 days x 6 fills (numberOfRepeatsAllowed 5)"


def test_refills_never_run_past_the_validity_period(terms: Terminology) -> None:
    resource = mmf_order_as_epic_sends_it()
    resource["dispenseRequest"]["validityPeriod"]["end"] = "2026-05-01"
    found = exposure(resource, terms)
    assert found.end == date(2026, 5, 1)
    assert found.end_basis is not None
    assert found.end_basis.endswith("cut at the validityPeriod end")


def test_an_order_without_supply_duration_uses_quantity_per_fill(terms: Terminology) -> None:
    resource = mmf_order_as_epic_sends_it()
    del resource["dispenseRequest"]["expectedSupplyDuration"]
    resource["dispenseRequest"]["numberOfRepeatsAllowed"] = 0
    found = exposure(resource, terms)
    assert found.end == date(2026, 2, 8)  # 120 tablets / 4 a day = 30 days


# ------------------------------------------------------------------ records of nothing taken
@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        pytest.param("MedicationStatement", "status", "draft", id="r5-statement-draft"),
        pytest.param("MedicationDispense", "status", "unfulfilled", id="r5-dispense-unfulfilled"),
        pytest.param("MedicationStatement", "taken", "n", id="stu3-statement-taken-n"),
        pytest.param("MedicationStatement", "taken", "unk", id="stu3-statement-taken-unk"),
        pytest.param("MedicationAdministration", "notGiven", True, id="stu3-administration"),
        pytest.param("MedicationAdministration", "wasNotGiven", True, id="dstu2-administration"),
    ],
)
def test_a_record_negated_by_status_or_flag_is_no_exposure(
    terms: Terminology, kind: str, field: str, value: Any
) -> None:
    resource = medication(CYCLOPHOSPHAMIDE, start=START, end=START)
    resource["resourceType"] = kind
    resource[field] = value
    assert map_resource(resource, terms) is None


def test_stu3_statement_taken_y_is_kept(terms: Terminology) -> None:
    resource = medication(CYCLOPHOSPHAMIDE, start=START, end=START) | {"taken": "y"}
    assert exposure(resource, terms).start == START


# ------------------------------------------------------------------ dosage rates
def _dosed(repeat: dict[str, Any] | None, **dosage: Any) -> dict[str, Any]:
    resource = medication(PREDNISONE, start=START, end="2024-03-10", dose_mg=30)
    entry = resource["dosage"][0]
    entry.pop("timing", None)
    if repeat is not None:
        entry["timing"] = {"repeat": repeat}
    entry.update(dosage)
    return resource


@pytest.mark.parametrize(
    "dosage",
    [
        pytest.param({"asNeededBoolean": True}, id="asNeededBoolean"),
        pytest.param({"asNeededCodeableConcept": {"text": "joint pain"}}, id="asNeededCodeable"),
        pytest.param({"asNeeded": True}, id="r5-asNeeded"),
        pytest.param({"asNeededFor": [{"text": "pain"}]}, id="r5-asNeededFor"),
    ],
)
def test_as_needed_has_no_daily_dose(terms: Terminology, dosage: dict[str, Any]) -> None:
    """ "30 mg up to 4 times a day as needed" is a ceiling, not 120 mg a day."""
    found = exposure(_dosed({"frequency": 4, "period": 1, "periodUnit": "d"}, **dosage), terms)
    assert (found.doses_per_day, found.daily_dose_mg) == (None, None)


@pytest.mark.parametrize(
    ("repeat", "daily_mg"),
    [
        pytest.param(
            {"frequency": 1, "period": 12, "periodMax": 24, "periodUnit": "h"}, 30, id="q12-24h"
        ),
        pytest.param(
            {"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "d"}, 30, id="1-2/day"
        ),
        pytest.param(
            {"frequency": 2, "period": 1, "periodMax": 2, "periodUnit": "d"}, 30, id="2/1-2d"
        ),
        pytest.param({"frequency": 2, "period": 1, "periodUnit": "d"}, 60, id="exact-2/day"),
    ],
)
def test_a_ranged_timing_gives_its_lowest_daily_dose(
    terms: Terminology, repeat: dict[str, Any], daily_mg: float
) -> None:
    assert exposure(_dosed(repeat), terms).daily_dose_mg == pytest.approx(daily_mg)


def test_no_supply_length_is_derived_from_a_ranged_or_as_needed_rate(terms: Terminology) -> None:
    def order(**dosage: Any) -> dict[str, Any]:
        resource = medication(
            PREDNISONE_5MG_TAB, start=START, dose_mg=1, dose_unit="tablet", kind="MedicationRequest"
        )
        resource["dosageInstruction"][0].pop("timing")
        resource["dosageInstruction"][0].update(dosage)
        resource["dispenseRequest"] = {"quantity": {"value": 60, "unit": "tablet"}}
        return resource

    exact = {"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}
    ranged = {
        "timing": {"repeat": {"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "d"}}
    }
    assert exposure(order(**exact), terms).end == date(2024, 2, 8)  # 60 / 2 a day: 30 days
    assert exposure(order(**ranged), terms).end is None
    assert exposure(order(**exact, asNeededBoolean=True), terms).end is None


@pytest.mark.parametrize(
    ("code", "system", "per_day"),
    [
        pytest.param(
            "BID", "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", 2, id="BID"
        ),
        pytest.param("TID", "urn:oid:2.16.840.1.113883.5.1022", 3, id="TID-by-oid"),
        pytest.param("qd", None, 1, id="qd-without-system"),
        pytest.param(
            "QOD", "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", 0.5, id="QOD"
        ),
        pytest.param("BID", "http://hospital.example/freq", None, id="local-system-unread"),
    ],
)
def test_a_timing_sent_as_a_code(
    terms: Terminology, code: str, system: str | None, per_day: float | None
) -> None:
    coding = {"code": code} | ({"system": system} if system else {})
    resource = _dosed(None, timing={"code": {"coding": [coding]}})
    assert exposure(resource, terms).doses_per_day == per_day


# ------------------------------------------------------------------ order status and dates
def test_a_stopped_order_covers_its_first_fill_only(terms: Terminology) -> None:
    def order(status: str) -> dict[str, Any]:
        resource = medication(MYCOPHENOLATE, start=START, kind="MedicationRequest", status=status)
        resource["dispenseRequest"] = {
            "expectedSupplyDuration": {"value": 30, "unit": "days"},
            "numberOfRepeatsAllowed": 5,
        }
        return resource

    assert exposure(order("completed"), terms).end == date(2024, 7, 7)  # 6 fills: 180 days
    stopped = exposure(order("stopped"), terms)
    assert stopped.end == date(2024, 2, 8)  # 30 days
    assert stopped.end_basis == "expectedSupplyDuration 30 days"


def test_an_active_statement_without_effective_is_taken_as_of_its_assertion(
    terms: Terminology,
) -> None:
    resource = medication(MYCOPHENOLATE, status="active") | {
        "dateAsserted": "2026-11-05T10:00:00+08:00"
    }
    found = exposure(resource, terms)
    assert (found.start, found.end) == (date(2026, 11, 5), None)
    completed = medication(MYCOPHENOLATE) | {"dateAsserted": "2026-11-05"}
    assert exposure(completed, terms).start is None  # taken at some time before it: undated


@pytest.mark.parametrize(
    ("status", "intent", "counted"),
    [
        pytest.param("ENTERED_IN_ERROR", "order", False, id="entered-in-error-upper-underscore"),
        pytest.param("Entered in Error", "order", False, id="entered-in-error-words"),
        pytest.param("Cancelled", "order", False, id="cancelled-capitalised"),
        pytest.param("active", "Proposal", False, id="intent-proposal-capitalised"),
        pytest.param("Active", "Order", True, id="active-capitalised"),
    ],
)
def test_status_and_intent_codes_as_feeds_spell_them(
    terms: Terminology, status: str, intent: str, counted: bool
) -> None:
    resource = medication(FILGRASTIM, start=START, kind="MedicationRequest", status=status)
    resource["intent"] = intent
    found = map_resource(resource, terms)
    assert (found is not None) is counted
    if found is not None:
        assert isinstance(found.fact, MedicationExposure)
        assert found.fact.status == "active"  # runs to the day asked, as an active order does
