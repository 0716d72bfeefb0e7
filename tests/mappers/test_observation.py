"""Observation -> LabResult: codes, statuses, values, units, reference ranges, robustness."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import LabResult
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.conftest import ROOT, run
from tests.factories import (
    ALT,
    HGB,
    HIV,
    LOINC,
    NEGATIVE,
    POSITIVE,
    TBIL,
    WBC,
    obs,
)


def lab(resource: dict[str, Any], terms: Terminology) -> LabResult:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, LabResult)
    return mapped.fact


def test_maps_code_concept_value_and_conversion(terms: Terminology) -> None:
    resource = obs(HGB, 6.2, "g/dL", days=3)
    result = lab(resource, terms)
    assert result.reference == f"Observation/{resource['id']}"
    assert "hemoglobin" in result.concepts
    assert result.codes[0].code == HGB
    assert result.effective == date(2026, 11, 24)
    assert result.quantity is not None
    assert (result.quantity.value, result.quantity.unit) == (6.2, "g/dL")
    assert result.quantity.canonical_value == pytest.approx(62.0)
    assert result.quantity.canonical_unit == "g/L"


def test_map_resource_returns_the_patient(terms: Terminology) -> None:
    mapped = map_resource(obs(HGB, 120, "g/L"), terms, source="labs.ndjson:7")
    assert mapped is not None
    assert mapped.patient == "Patient/p1"
    assert mapped.fact.source == "labs.ndjson:7"  # type: ignore[union-attr]


def test_code_no_trial_uses_is_dropped(terms: Terminology) -> None:
    assert map_resource(obs("8867-4", 72, "/min"), terms) is None  # heart rate


@pytest.mark.parametrize(
    "status", ["preliminary", "registered", "cancelled", "entered-in-error", "unknown"]
)
def test_status_that_does_not_count_is_dropped(terms: Terminology, status: str) -> None:
    assert map_resource(obs(HGB, 120, "g/L", status=status), terms) is None


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_status_that_counts_is_kept(terms: Terminology, status: str) -> None:
    assert lab(obs(HGB, 120, "g/L", status=status), terms).status == status


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        pytest.param(
            "effectiveDateTime",
            "2026-11-20T23:30:00+08:00",
            date(2026, 11, 20),
            id="dateTime-keeps-its-own-day",
        ),
        pytest.param(
            "effectiveDateTime",
            "2026-11-20T00:30:00-05:00",
            date(2026, 11, 20),
            id="negative-offset-keeps-its-own-day",
        ),
        pytest.param(
            "effectiveDateTime", "2026-11", date(2026, 11, 1), id="partial-month-first-day"
        ),
        pytest.param(
            "effectivePeriod",
            {"start": "2026-11-19T08:00:00Z"},
            date(2026, 11, 19),
            id="period-start",
        ),
        pytest.param(
            "effectiveInstant", "2026-11-18T08:00:00.000Z", date(2026, 11, 18), id="instant"
        ),
        pytest.param(
            "issued", "2026-11-17T08:00:00Z", date(2026, 11, 17), id="issued-as-last-resort"
        ),
    ],
)
def test_effective_date(terms: Terminology, field: str, value: Any, expected: date) -> None:
    resource = obs(HGB, 120, "g/L")
    del resource["effectiveDateTime"]
    resource[field] = value
    assert lab(resource, terms).effective == expected


# ------------------------------------------------------------------ malformed input
def mangle(resource: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = resource
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return resource


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(("valueQuantity", "value"), "6.2", "not a number", id="value-is-a-string"),
        pytest.param(("valueQuantity", "value"), True, "not a number", id="value-is-a-boolean"),
        pytest.param(("effectiveDateTime",), "27/11/2026", "not a FHIR date", id="date-day-first"),
        pytest.param(("effectiveDateTime",), "2026-02-30", "not a FHIR date", id="date-impossible"),
        pytest.param(("effectiveDateTime",), 20261127, "not a FHIR date", id="date-is-a-number"),
        pytest.param(("effectiveDateTime",), "26", "not a FHIR date", id="date-too-short"),
        pytest.param(("code",), "718-7", "CodeableConcept", id="code-is-a-string"),
        pytest.param(("valueQuantity",), "6.2 g/dL", "", id="quantity-is-a-string"),
        pytest.param(
            ("referenceRange",),
            [{"high": {"value": "n/a"}}],
            "not a number",
            id="range-high-is-text",
        ),
    ],
)
def test_malformed_observation_raises_mapping_error_naming_it(
    terms: Terminology, path: tuple[str, ...], value: Any, message: str
) -> None:
    resource = mangle(obs(HGB, 6.2, "g/dL", ref_high=16), path, value)
    with pytest.raises(MappingError, match=f"^Observation/{resource['id']}: .*{message}"):
        map_resource(resource, terms)


def test_observation_without_code_raises_mapping_error(terms: Terminology) -> None:
    resource = obs(HGB, 6.2, "g/dL")
    del resource["code"]
    with pytest.raises(MappingError, match=f"^Observation/{resource['id']}: .*code"):
        map_resource(resource, terms)


def test_observation_with_text_only_code_is_dropped(terms: Terminology) -> None:
    resource = obs(HGB, 6.2, "g/dL")
    resource["code"] = {"text": "Hb"}
    assert map_resource(resource, terms) is None


def test_observation_without_subject_raises(terms: Terminology) -> None:
    resource = obs(HGB, 6.2, "g/dL")
    del resource["subject"]
    with pytest.raises(MappingError, match="names no patient"):
        map_resource(resource, terms)


def test_value_integer_must_be_an_integer(terms: Terminology) -> None:
    resource = obs(HGB)
    resource["valueInteger"] = "7"
    with pytest.raises(MappingError, match="valueInteger"):
        map_resource(resource, terms)


# ------------------------------------------------------------------ units
def test_ucum_code_preferred_over_display_unit(terms: Terminology) -> None:
    resource = obs(HGB)
    resource["valueQuantity"] = {
        "value": 6.0,
        "unit": "grams per decilitre",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    }
    quantity = lab(resource, terms).quantity
    assert quantity is not None
    assert quantity.canonical_value == pytest.approx(60.0)


def test_unit_that_cannot_be_converted_is_kept_as_recorded(terms: Terminology) -> None:
    quantity = lab(obs(HGB, 8.1, "mmol/L"), terms).quantity
    assert quantity is not None
    assert (quantity.value, quantity.unit) == (8.1, "mmol/L")
    assert quantity.canonical_value is None


def test_comparator_is_kept(terms: Terminology) -> None:
    quantity = lab(obs(WBC, 0.5, "10*9/L", comparator="<"), terms).quantity
    assert quantity is not None
    assert quantity.comparator == "<"


# ------------------------------------------------------------------ reference range
def test_reference_high_is_converted(terms: Terminology) -> None:
    high = lab(obs(TBIL, 1.0, "mg/dL", ref_high=1.2), terms).ref_high
    assert high is not None
    assert high.canonical_value == pytest.approx(1.2 * 17.104, rel=1e-4)
    assert high.canonical_unit == "umol/L"


def test_reference_high_without_unit_takes_the_value_unit(terms: Terminology) -> None:
    resource = obs(ALT, 2.0, "ukat/L")
    resource["referenceRange"] = [{"low": {"value": 0.1}, "high": {"value": 0.6}}]
    high = lab(resource, terms).ref_high
    assert high is not None
    assert high.canonical_value == pytest.approx(36.0)


def test_reference_range_without_high_gives_none(terms: Terminology) -> None:
    resource = obs(ALT, 30, "U/L")
    resource["referenceRange"] = [{"low": {"value": 5, "unit": "U/L"}}, {"text": "normal < 40"}]
    assert lab(resource, terms).ref_high is None


# ------------------------------------------------------------------ qualitative results
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"coded": POSITIVE}, "positive", id="snomed-positive"),
        pytest.param({"coded": NEGATIVE}, "negative", id="snomed-negative"),
        pytest.param({"text": "POSITIVE"}, "positive", id="string-upper-case"),
        pytest.param({"text": " Negative "}, "negative", id="string-padded"),
        pytest.param({"text": "Detected"}, "positive", id="string-detected"),
        pytest.param({"text": "Not detected"}, "negative", id="string-not-detected"),
        pytest.param({"text": "阳性"}, "positive", id="string-chinese-positive"),
        pytest.param({"text": "阴性"}, "negative", id="string-chinese-negative"),
        pytest.param(
            {"value": 3.2, "unit": "{s_co_ratio}", "interpretation": "POS"},
            "positive",
            id="interpretation-POS",
        ),
        pytest.param(
            {"value": 0.1, "unit": "{s_co_ratio}", "interpretation": "NEG"},
            "negative",
            id="interpretation-NEG",
        ),
        pytest.param({"text": "equivocal"}, None, id="string-equivocal"),
        pytest.param(
            {"value": 3.2, "unit": "{s_co_ratio}"}, None, id="number-without-interpretation"
        ),
    ],
)
def test_qualitative(terms: Terminology, kwargs: dict[str, Any], expected: str | None) -> None:
    assert lab(obs(HIV, **kwargs), terms).qualitative == expected


def test_coded_value_wins_over_contradicting_interpretation(terms: Terminology) -> None:
    result = lab(obs(HIV, coded=NEGATIVE, interpretation="POS"), terms)
    assert result.qualitative == "negative"


# ------------------------------------------------------------------ site code map
def test_site_map_file_given_at_load_translates_local_codes(tmp_path: Any) -> None:
    site = tmp_path / "site.csv"
    site.write_text(
        "local_system,local_code,system,code,display\n"
        f"http://hospital.example/lab,HB01,{LOINC},{HGB},Hemoglobin\n",
        encoding="utf-8",
    )
    terms = Terminology.load(ROOT / "terminology", site_code_map=site)
    resource = obs("HB01", 6.0, "g/dL", system="http://hospital.example/lab")
    result = lab(resource, terms)
    assert "hemoglobin" in result.concepts
    assert result.codes[0].code == HGB
    assert "site code map" in (result.codes[0].display or "")
    assert result.codes[1].code == "HB01"  # the code as recorded is kept
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(60.0)


SITE_LAB = "http://hospital.example.org/fhir/CodeSystem/lab"


def test_bundled_site_map_local_lab_code_is_recognised(terms: Terminology) -> None:
    result = lab(obs("HGB", 6.0, "g/dL", system=SITE_LAB), terms)
    assert "hemoglobin" in result.concepts
    assert (result.codes[0].system, result.codes[0].code) == (LOINC, HGB)


def test_bundled_site_map_local_code_decides_a_criterion() -> None:
    assert run([obs("HGB", 5.9, "g/dL", system=SITE_LAB)], "I6.hgb").verdict == "fail"
    assert run([obs("HGB", 6.0, "g/dL", system=SITE_LAB)], "I6.hgb").verdict == "pass"


def test_local_code_without_site_map_is_dropped(terms: Terminology) -> None:
    resource = obs("HB01", 6.0, "g/dL", system="http://hospital.example/lab")
    assert map_resource(resource, terms) is None
