"""Observation -> LabResult: codes, statuses, values, units, reference ranges, robustness."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from service.facts import LabResult
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.conftest import AS_OF, ROOT, run
from tests.factories import (
    ALT,
    HGB,
    HIV,
    LOINC,
    NEGATIVE,
    POSITIVE,
    SNOMED,
    TBIL,
    TPHA,
    WBC,
    obs,
)

HBSAG = "5196-1"
HCG = "20415-6"  # hcg_serum: quantitative beta-hCG
RPR_TITER = "11084-1"
HBV_DNA = "29615-2"
LVEF = "10230-1"


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


@pytest.mark.parametrize("system", [None, ""], ids=["no-system", "empty-system"])
def test_loinc_code_without_system_is_read_as_loinc(terms: Terminology, system: str | None) -> None:
    resource = obs(HGB, 118, "g/L")
    coding = resource["code"]["coding"][0]
    del coding["system"]
    if system is not None:
        coding["system"] = system
    result = lab(resource, terms)
    assert "hemoglobin" in result.concepts
    assert result.codes[0].system == "http://loinc.org"


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("718-8", id="wrong-check-digit"),
        pytest.param("HGB", id="local-mnemonic"),
        pytest.param("718-7a", id="not-a-loinc-pattern"),
    ],
)
def test_other_codes_without_system_stay_unread(terms: Terminology, code: str) -> None:
    resource = obs(HGB, 118, "g/L")
    resource["code"]["coding"] = [{"code": code}]
    assert map_resource(resource, terms) is None


@pytest.mark.parametrize("status", ["preliminary", "registered", "cancelled", "entered-in-error"])
def test_status_that_does_not_count_is_dropped(terms: Terminology, status: str) -> None:
    assert map_resource(obs(HGB, 120, "g/L", status=status), terms) is None


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_status_that_counts_is_kept(terms: Terminology, status: str) -> None:
    assert lab(obs(HGB, 120, "g/L", status=status), terms).status == status


@pytest.mark.parametrize("status", ["Final", " final", "AMENDED", "Corrected "])
def test_status_in_another_case_is_the_fhir_code(terms: Terminology, status: str) -> None:
    result = lab(obs(HGB, 120, "g/L", status=status), terms)
    assert result.status == status.strip().lower()
    assert not result.status_unread
    assert result.quantity is not None


@pytest.mark.parametrize("status", ["unknown", "F", "complete", "", None])
def test_status_we_cannot_read_keeps_the_result_without_a_reading(
    terms: Terminology, status: str | None
) -> None:
    """ "unknown" (the source does not know which status applies), an HL7 v2 "F", a word or
    none at all: the result may be final, so it is kept (an earlier one must not decide in
    its place), with no value or reading of its own; its value is shown as text."""
    resource = obs(HBSAG, text="阳性") if status == "F" else obs(HGB, 50, "g/L")
    if status is None:
        del resource["status"]
    else:
        resource["status"] = status
    result = lab(resource, terms)
    assert result.status_unread
    assert result.quantity is None
    assert result.qualitative is None
    assert result.text == ("阳性" if status == "F" else "50 g/L")


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
            "effectivePeriod", {"end": "2026-11-19T08:00:00Z"}, date(2026, 11, 19), id="period-end"
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


# ------------------------------------------------------------------ as labs send them
REALWORLD = ROOT / "tests" / "data" / "realworld"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def scenario(name: str, terms: Terminology) -> LabResult:
    """A raw Observation as a hospital LIS sends it (tests/data/realworld/<name>.json)."""
    resource = json.loads((REALWORLD / f"{name}.json").read_text(encoding="utf-8"))
    return lab(resource, terms)


def raw(loinc: str, **value: Any) -> dict[str, Any]:
    """A bare Observation as an EHR emits it: a timestamp with an offset, no category."""
    return {
        "resourceType": "Observation",
        "id": "raw1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-20T07:45:00+08:00",
        **value,
    }


def flag(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": V3, "code": code}]}]


def test_effective_at_keeps_the_full_timestamp_and_its_offset(terms: Terminology) -> None:
    result = lab(raw(HGB, valueQuantity={"value": 120, "unit": "g/L"}), terms)
    assert result.effective == date(2026, 11, 20)
    assert result.effective_at == datetime(2026, 11, 20, 7, 45, tzinfo=timezone(timedelta(hours=8)))


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param("2026-11-20", None, id="date-only"),
        pytest.param("2026-11", None, id="partial"),
        pytest.param("2026-11-20T07:45:00", None, id="no-offset-cannot-be-ordered"),
        pytest.param(
            "2026-11-19T23:45:00.120Z",
            datetime(2026, 11, 19, 23, 45, 0, 120000, tzinfo=UTC),
            id="utc-with-fraction",
        ),
    ],
)
def test_effective_at_only_with_a_time_and_offset(
    terms: Terminology, when: str, expected: datetime | None
) -> None:
    resource = raw(HGB, valueQuantity={"value": 120, "unit": "g/L"}, effectiveDateTime=when)
    assert lab(resource, terms).effective_at == expected


def test_every_reference_range_is_read(terms: Terminology) -> None:
    result = scenario("creatinine-ranges-by-sex-and-age", terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(97.24, rel=1e-3)
    male, female, therapeutic, text_only = result.ref_ranges
    assert (male.type, male.sex, male.applies_to) == ("normal", "male", ("248153007",))
    assert male.high is not None
    assert male.high.canonical_value == pytest.approx(106.08, rel=1e-3)
    assert male.low is not None
    assert male.low.canonical_value == pytest.approx(61.88, rel=1e-3)
    assert (male.age_low_years, male.age_high_years) == (18, 65)
    assert male.text == "男 0.7-1.2"
    # a limit without a unit takes the value's unit; an age in months is read in years
    assert female.sex == "female"
    assert female.high is not None
    assert female.high.canonical_value == pytest.approx(79.56, rel=1e-3)
    assert female.age_low_years == pytest.approx(18.0)
    assert female.age_high_years is None
    assert therapeutic.type == "treatment"
    assert therapeutic.sex is None
    assert (text_only.low, text_only.high, text_only.text) == (None, None, "see report")
    # ref_high stays the first range's upper limit
    assert result.ref_high == male.high
    assert [c.code for c in result.interpretation] == ["N"]


def test_reference_range_naming_both_sexes_has_no_sex(terms: Terminology) -> None:
    both = {
        "coding": [{"system": SNOMED, "code": "248153007"}, {"system": SNOMED, "code": "248152002"}]
    }
    resource = raw(ALT, valueQuantity={"value": 30, "unit": "U/L"})
    resource["referenceRange"] = [{"high": {"value": 40}, "appliesTo": [both]}]
    (only,) = lab(resource, terms).ref_ranges
    assert only.sex is None
    assert only.applies_to == ("248153007", "248152002")


def test_reference_range_that_is_not_a_list_raises(terms: Terminology) -> None:
    resource = raw(ALT, valueQuantity={"value": 30, "unit": "U/L"}, referenceRange={"high": 1})
    with pytest.raises(MappingError, match="referenceRange"):
        map_resource(resource, terms)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("hbsag-index-flag-high", "positive", id="index-with-H"),
        pytest.param("hbsag-index-flag-normal", "negative", id="index-with-N"),
        pytest.param("hbsag-text-negative-with-flag-high", "negative", id="text-beats-flag"),
    ],
)
def test_interpretation_flag_decides_a_numeric_serology(
    terms: Terminology, name: str, expected: str
) -> None:
    assert scenario(name, terms).qualitative == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("H", "positive"),
        ("HH", "positive"),
        ("A", "positive"),
        ("AA", "positive"),
        ("POS", "positive"),
        ("DET", "positive"),
        ("N", "negative"),
        ("NEG", "negative"),
        ("ND", "negative"),
        ("L", None),
        ("IND", None),
    ],
)
def test_interpretation_codes_on_an_hbsag_index(
    terms: Terminology, code: str, expected: str | None
) -> None:
    resource = raw(HBSAG, valueQuantity={"value": 3.2, "unit": "COI"}, interpretation=flag(code))
    assert lab(resource, terms).qualitative == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("H", None, id="H-is-a-range-flag-not-a-result"),
        pytest.param("N", None, id="N-is-a-range-flag-not-a-result"),
        pytest.param("POS", "positive", id="POS-is-a-result-everywhere"),
    ],
)
def test_range_flags_do_not_decide_tests_not_marked_qualitative(
    terms: Terminology, code: str, expected: str | None
) -> None:
    resource = raw(HCG, valueQuantity={"value": 12, "unit": "mIU/mL"}, interpretation=flag(code))
    assert lab(resource, terms).qualitative == expected


def test_flag_never_overrides_a_coded_value(terms: Terminology) -> None:
    coded = {"coding": [{"system": SNOMED, "code": "260385009"}], "text": "Negative"}
    resource = raw(HBSAG, valueCodeableConcept=coded, interpretation=flag("H"))
    assert lab(resource, terms).qualitative == "negative"


def test_equivocal_coded_value_is_neither_even_with_a_flag(terms: Terminology) -> None:
    coded = {"coding": [{"system": SNOMED, "code": "42425007"}]}
    resource = raw(HBSAG, valueCodeableConcept=coded, interpretation=flag("POS"))
    assert lab(resource, terms).qualitative is None


def test_interpretation_text_reads_like_result_text(terms: Terminology) -> None:
    resource = raw(HBSAG, valueQuantity={"value": 0.2}, interpretation=[{"text": "阴性"}])
    assert lab(resource, terms).qualitative == "negative"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("阴性", "negative"),
        ("阳性", "positive"),
        ("弱阳性", "positive"),
        ("未检出", "negative"),
        ("检出", "positive"),
        ("低于检测下限", "negative"),
        ("++", "positive"),
        ("±", None),
        ("（－）", "negative"),
        ("(+)", "positive"),
        ("Pos", "positive"),
        ("NEG", "negative"),
        ("non-reactive", "negative"),
        ("Weakly reactive", "positive"),
        ("TND", "negative"),
        ("可疑", None),
        ("Negative (0.05 S/CO)", "negative"),
        ("阴性 0.12", "negative"),
    ],
)
def test_string_results_as_labs_write_them(
    terms: Terminology, text: str, expected: str | None
) -> None:
    assert lab(raw(HIV, valueString=text), terms).qualitative == expected


# ------------------------------------------------------------------ titers
def test_titer_as_a_ratio_is_reactive_for_syphilis_tests(terms: Terminology) -> None:
    result = scenario("rpr-titer-ratio", terms)
    assert result.titer == 16
    assert result.qualitative == "positive"
    assert result.text == "1:16"


@pytest.mark.parametrize(
    ("value", "titer", "expected"),
    [
        pytest.param({"valueString": "1:16"}, 16, "positive", id="string"),
        pytest.param({"valueString": "1：16"}, 16, "positive", id="full-width-colon"),
        pytest.param({"valueString": "1/160"}, 160, "positive", id="slash"),
        pytest.param({"valueString": "1:1"}, 1, "positive", id="undiluted-is-any-dilution"),
        pytest.param({"valueString": ">1:1024"}, 1024, "positive", id="above"),
        pytest.param({"valueString": "<1:1"}, None, "negative", id="below-undiluted"),
        pytest.param({"valueString": "<1:8"}, None, None, id="below-a-dilution-cannot-decide"),
        pytest.param({"valueString": "Non-reactive"}, None, "negative", id="text"),
        pytest.param({"valueString": "Reactive 1:8"}, 8, "positive", id="text-and-titer"),
        pytest.param(
            {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 32}}},
            32,
            "positive",
            id="ratio",
        ),
        pytest.param(
            {
                "valueRatio": {
                    "numerator": {"value": 1},
                    "denominator": {"value": 1, "comparator": "<"},
                }
            },
            None,
            "negative",
            id="ratio-below-undiluted",
        ),
        pytest.param(
            {"valueRatio": {"numerator": {"value": 3}, "denominator": {"value": 2}}},
            None,
            None,
            id="ratio-that-is-no-titer",
        ),
    ],
)
def test_rpr_titers(
    terms: Terminology, value: dict[str, Any], titer: float | None, expected: str | None
) -> None:
    result = lab(raw(RPR_TITER, **value), terms)
    assert result.titer == titer
    assert result.qualitative == expected


def test_rpr_titer_below_undiluted_scenario(terms: Terminology) -> None:
    result = scenario("rpr-titer-below-undiluted", terms)
    assert (result.titer, result.qualitative) == (None, "negative")


def test_titer_is_recorded_but_not_read_as_positive_elsewhere(terms: Terminology) -> None:
    result = lab(raw(HIV, valueString="1:16"), terms)
    assert result.titer == 16
    assert result.qualitative is None  # hiv_ab does not say a titer is reactive


# ------------------------------------------------------------------ below the limit of quantitation
@pytest.mark.parametrize("name", ["hbv-dna-below-loq", "hbv-dna-below-loq-text"])
def test_below_the_limit_of_quantitation_is_a_bound_not_not_detected(
    terms: Terminology, name: str
) -> None:
    result = scenario(name, terms)
    assert result.quantity is not None
    assert (result.quantity.value, result.quantity.comparator) == (20, "<")
    assert result.quantity.canonical_value == pytest.approx(20)
    assert result.quantity.canonical_unit == "[IU]/mL"
    assert result.qualitative is None


@pytest.mark.parametrize(
    ("text", "value", "comparator"),
    [
        ("<20 IU/mL", 20, "<"),
        ("< 20", 20, "<"),
        ("＜20", 20, "<"),
        ("≤15", 15, "<="),
        ("35", 35, None),
    ],
)
def test_string_values_become_quantities(
    terms: Terminology, text: str, value: float, comparator: str | None
) -> None:
    result = lab(raw(HBV_DNA, valueString=text), terms)
    assert result.quantity is not None
    assert (result.quantity.value, result.quantity.comparator) == (value, comparator)
    assert result.text == text


def test_string_value_unit_is_converted(terms: Terminology) -> None:
    result = lab(raw(HGB, valueString="6.2 g/dl"), terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(62)


# ------------------------------------------------------------------ LVEF sent as a fraction
def test_lvef_fraction_sent_as_percent_scenario(terms: Terminology) -> None:
    result = scenario("lvef-fraction-sent-as-percent", terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(61)
    assert result.quantity.canonical_unit == "%"
    (ref,) = result.ref_ranges
    assert ref.low is not None
    assert ref.low.canonical_value == pytest.approx(50)
    assert ref.high is not None
    assert ref.high.canonical_value == pytest.approx(70)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(0.61, "%", 61, id="fraction-as-percent"),
        pytest.param(0.61, "1", 61, id="fraction-as-unity"),
        pytest.param(0.61, None, 61, id="fraction-without-unit"),
        pytest.param(0.99, "%", 99, id="just-below-the-limit"),
        pytest.param(1.0, "%", 1, id="at-the-limit-a-percent"),
        pytest.param(61, "%", 61, id="percent"),
        pytest.param(61, None, 61, id="percent-without-unit"),
        pytest.param(35, "1", 35, id="percent-sent-as-unity"),
    ],
)
def test_lvef_fraction_below_one(
    terms: Terminology, value: float, unit: str | None, expected: float
) -> None:
    quantity = {"value": value} | ({"unit": unit} if unit else {})
    result = lab(raw(LVEF, valueQuantity=quantity), terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(expected)


def test_fraction_rule_is_only_for_value_sets_that_ask(terms: Terminology) -> None:
    result = lab(raw(HGB, valueQuantity={"value": 0.61, "unit": "g/dL"}), terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(6.1)


# ------------------------------------------------------------------ lab unit spellings
@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected"),
    [
        pytest.param(WBC, 4.2, "×10^9/L", 4.2, id="wbc-times-10^9/L"),
        pytest.param(WBC, 4.2, "G/L", 4.2, id="wbc-G/L"),
        pytest.param(WBC, 4200, "cells/uL", 4.2, id="wbc-cells/uL"),
        pytest.param(WBC, 4.2, "K/µL", 4.2, id="wbc-K/micro-L"),
        pytest.param(HGB, 6.2, "g/dl", 62, id="hgb-g/dl"),
        pytest.param(TBIL, 1.0, "mg/dl", 17.104, id="bilirubin-mg/dl"),
        pytest.param(TBIL, 17.1, "µmol/l", 17.1, id="bilirubin-micro-mol/l"),
        pytest.param(ALT, 40, "U/l", 40, id="alt-U/l"),
    ],
)
def test_free_text_units_from_a_lis(
    terms: Terminology, loinc: str, value: float, unit: str, expected: float
) -> None:
    result = lab(raw(loinc, valueQuantity={"value": value, "unit": unit}), terms)
    assert result.quantity is not None
    assert result.quantity.canonical_value == pytest.approx(expected, rel=1e-3)


# ------------------------------------------------------------------ through to a verdict
def dated(resource: dict[str, Any], days: int = 3) -> dict[str, Any]:
    """`resource` dated `days` before AS_OF, at 07:45 China time."""
    return {**resource, "effectiveDateTime": f"{AS_OF - timedelta(days=days)}T07:45:00+08:00"}


def test_hiv_index_with_a_high_flag_excludes() -> None:
    flagged = dated(
        raw(HIV, valueQuantity={"value": 38.2, "unit": "S/CO"}, interpretation=flag("H"))
    )
    assert run([flagged], "E10.hiv").verdict == "fail"


def test_hiv_index_with_a_normal_flag_passes() -> None:
    flagged = dated(
        raw(HIV, valueQuantity={"value": 0.12, "unit": "S/CO"}, interpretation=flag("N"))
    )
    assert run([flagged], "E10.hiv").verdict == "pass"


def test_hiv_index_without_a_flag_stays_unknown() -> None:
    bare = dated(raw(HIV, valueQuantity={"value": 0.12, "unit": "S/CO"}))
    assert run([bare], "E10.hiv").verdict == "unknown"


def test_rpr_titer_and_reactive_tpha_exclude() -> None:
    rpr = dated(raw(RPR_TITER, valueRatio={"numerator": {"value": 1}, "denominator": {"value": 8}}))
    tpha = dated(raw(TPHA, valueString="阳性(+)"))
    assert run([rpr, tpha], "E10.syphilis").verdict == "fail"


def test_nonreactive_tpha_in_chinese_passes_syphilis() -> None:
    tpha = dated(raw(TPHA, valueString="阴性(-)"))
    rpr = dated(raw(RPR_TITER, valueString="1:2"))
    assert run([rpr, tpha], "E10.syphilis").verdict == "pass"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(0.61, "%", "pass", id="fraction-0.61-is-61-percent"),
        pytest.param(0.54, "%", "fail", id="fraction-0.54-is-54-percent"),
        pytest.param(0.55, None, "pass", id="fraction-at-the-limit"),
        pytest.param(55, "%", "pass", id="percent-at-the-limit"),
    ],
)
def test_lvef_sent_as_a_fraction_decides_as_a_percentage(
    value: float, unit: str | None, expected: str
) -> None:
    quantity = {"value": value} | ({"unit": unit} if unit else {})
    assert run([dated(raw(LVEF, valueQuantity=quantity))], "I6.lvef").verdict == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(3.0, "G/L", "pass", id="G/L-at-the-limit"),
        pytest.param(2.9, "G/L", "fail", id="G/L-below"),
        pytest.param(3000, "cells/µL", "pass", id="cells-per-micro-litre"),
        pytest.param(2.9, "×10⁹/L", "fail", id="times-ten-superscript-nine"),
        pytest.param(3.0, "x10E3/uL", "pass", id="x10E3/uL"),
    ],
)
def test_wbc_in_lab_spellings_decides(value: float, unit: str, expected: str) -> None:
    resource = dated(raw(WBC, valueQuantity={"value": value, "unit": unit}))
    assert run([resource], "I6.wbc").verdict == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param({"low": {"value": 18, "unit": "years"}}, 18.0, id="years"),
        pytest.param({"low": {"value": 18, "unit": "岁"}}, 18.0, id="chinese-years"),
        pytest.param({"low": {"value": 6, "unit": "months"}}, 0.5, id="months"),
        pytest.param({"low": {"value": 18}}, 18.0, id="no-unit-is-years"),
        pytest.param({"low": {"value": 18, "unit": "furlongs"}}, None, id="unreadable-unit"),
    ],
)
def test_reference_range_age_in_years(
    terms: Terminology, age: dict[str, Any], expected: float | None
) -> None:
    resource = raw(ALT, valueQuantity={"value": 30, "unit": "U/L"})
    resource["referenceRange"] = [{"high": {"value": 40}, "age": age}]
    (only,) = lab(resource, terms).ref_ranges
    assert only.age_low_years == (pytest.approx(expected) if expected is not None else None)


# ------------------------------------------------------------------ panels with components
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _component(code: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]}, **value}


def test_a_panels_components_are_results_of_their_own(terms: Terminology) -> None:
    """A CBC panel (58410-2, in no value set) whose WBC and neutrophil count are components,
    as LIS interfaces send them: each a result with its own code, value, unit, range and
    flags, and the panel's status and time."""
    panel = obs("58410-2", status="corrected")
    panel["effectiveDateTime"] = "2026-11-15T08:30:00+08:00"
    panel["component"] = [
        _component(
            WBC,
            valueQuantity={"value": 1500, "unit": "/uL"},
            referenceRange=[{"low": {"value": 4, "unit": "10*9/L"}}],
        ),
        _component("751-8", valueString="0.4 10^9/L"),
        _component("8867-4", valueQuantity={"value": 70, "unit": "/min"}),  # in no value set
    ]
    mapped = map_resource(panel, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, tuple)
    wbc, anc = mapped.fact
    assert "wbc" in wbc.concepts
    assert "neutrophils_abs" in anc.concepts
    assert wbc.reference == anc.reference == f"Observation/{panel['id']}"
    assert wbc.quantity is not None
    assert wbc.quantity.canonical_value == pytest.approx(1.5)
    assert wbc.ref_ranges[0].low is not None
    assert wbc.ref_ranges[0].low.canonical_value == 4
    assert anc.quantity is not None
    assert anc.quantity.canonical_value == pytest.approx(0.4)
    assert {wbc.status, anc.status} == {"corrected"}
    assert wbc.effective == anc.effective == date(2026, 11, 15)
    assert wbc.effective_at == anc.effective_at is not None


def test_a_results_own_value_and_its_components(terms: Terminology) -> None:
    """An Observation in a value set keeps its own value; a component is read beside it; a
    component's interpretation is its own (a hepatitis panel's HBsAg flagged positive)."""
    own = obs(HGB, 118, "g/L")
    own["component"] = [_component(HBSAG, valueString="阳性(12.5)")]
    mapped = map_resource(own, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, tuple)
    hgb, hbsag = mapped.fact
    assert hgb.quantity is not None
    assert hgb.quantity.value == 118
    assert hgb.qualitative is None
    assert hbsag.qualitative == "positive"
    flagged = obs("24363-4")
    flagged["component"] = [
        _component(
            HBSAG,
            valueQuantity={"value": 12.5, "unit": "COI"},
            interpretation=[{"coding": [{"system": V3_INTERPRETATION, "code": "H"}]}],
        )
    ]
    assert lab(flagged, terms).qualitative == "positive"  # one component: the result itself


def test_a_panel_with_no_component_of_interest_is_dropped(terms: Terminology) -> None:
    panel = obs("85354-9")
    panel["component"] = [_component("8480-6", valueQuantity={"value": 120, "unit": "mm[Hg]"})]
    assert map_resource(panel, terms) is None
    preliminary = obs("58410-2", status="preliminary")
    preliminary["component"] = [_component(WBC, valueQuantity={"value": 1.5, "unit": "10*9/L"})]
    assert map_resource(preliminary, terms) is None


@pytest.mark.parametrize(
    "component", [pytest.param("x", id="not-an-object"), pytest.param({}, id="without-a-code")]
)
def test_a_malformed_component_raises_naming_the_observation(
    terms: Terminology, component: Any
) -> None:
    panel = obs("58410-2")
    panel["component"] = [component]
    with pytest.raises(MappingError, match=f"Observation/{panel['id']}: .*component"):
        map_resource(panel, terms)


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        ("http://terminology.hl7.org/CodeSystem/v2-0078", "H", "positive"),
        ("http://terminology.hl7.org/CodeSystem/v2-0078", "N", "negative"),
        ("http://hl7.org/fhir/v2/0078", "A", "positive"),
        ("http://hl7.org/fhir/v2/0078", "POS", "positive"),
        ("http://hospital.example.org/flags", "H", None),  # a local table: not read
    ],
)
def test_v2_table_0078_flags_read_as_observation_interpretation(
    terms: Terminology, system: str, code: str, expected: str | None
) -> None:
    """LIS interfaces map OBX-8 abnormal flags to HL7 v2 table 0078 (or its DSTU2 URI), whose
    codes R4's ObservationInterpretation took over: an HBsAg index flagged by it is read."""
    resource = obs(HBSAG, 12.5 if expected != "negative" else 0.3, "COI")
    resource["interpretation"] = [{"coding": [{"system": system, "code": code}]}]
    assert lab(resource, terms).qualitative == expected


def test_a_code_read_again_reads_alike_and_learning_starts_over(terms: Terminology) -> None:
    """The reading of an Observation's code is memoised (a population repeats few codes):
    the same code reads alike each time, a different display is a different code as sent,
    and a membership a terminology server teaches (`learn`) is read at once."""
    first = lab(obs(HGB, 120, "g/L"), terms)
    again = lab(obs(HGB, 121, "g/L"), terms)
    assert (again.codes, again.concepts) == (first.codes, first.concepts)
    shown = obs(HGB, 120, "g/L")
    shown["code"]["coding"][0]["display"] = "Hb"
    assert lab(shown, terms).codes[0].display == "Hb"
    local = obs("x-hb-1", 120, "g/L", system="http://hospital.example.org/lab")
    assert map_resource(local, terms) is None
    own = Terminology.load(ROOT / "terminology")
    assert map_resource(local, own) is None
    own.learn("http://hospital.example.org/lab", "x-hb-1", frozenset({"hemoglobin"}))
    assert "hemoglobin" in lab(local, own).concepts
