"""MedicationStatement / MedicationRequest -> MedicationExposure: codes, status, period, dose."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import MedicationExposure
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import (
    ATC,
    CYCLOPHOSPHAMIDE,
    METHYLPREDNISOLONE,
    MYCOPHENOLATE,
    PREDNISONE,
    PREDNISONE_5MG_TAB,
    RXNORM,
    UCUM,
    contained_request,
    medication,
)

START = date(2024, 1, 10)


def exposure(resource: dict[str, Any], terms: Terminology) -> MedicationExposure:
    mapped = map_resource(resource, terms)
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


def test_external_medication_reference_is_dropped(terms: Terminology) -> None:
    """A Medication on the server is not fetched by the mapper (pure, no I/O)."""
    resource = medication(PREDNISONE, start=START)
    del resource["medicationCodeableConcept"]
    resource["medicationReference"] = {"reference": "Medication/123"}
    assert map_resource(resource, terms) is None


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
