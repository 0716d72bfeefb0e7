"""The shipped medication and allergen tables recognise records as hospital systems code them.

Orders carry clinical-drug (SCD) or branded (SBD) RxNorm codes rather than the ingredient, and
RxNorm matches exactly, so each clinical drug must be a row of its value set. The records here
are raw FHIR as an EHR emits them: clinical-drug codes, no end date, Chinese text, allergies
without `category`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.criteria.exposure import exposure
from service.facts import Code, MedicationExposure
from service.mappers import map_resource
from service.terminology import Terminology

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def request(
    code: str,
    display: str,
    *,
    system: str = RXNORM,
    authored: str = "2026-03-02T09:15:00+08:00",
    status: str = "active",
    dose: dict[str, Any] | None = None,
    per_day: int = 1,
) -> dict[str, Any]:
    """A MedicationRequest as an EHR sends it: a clinical-drug code, no end, no days supply."""
    dosage: dict[str, Any] = {"timing": {"repeat": {"frequency": per_day, "period": 1}}}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{code}",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
        "medicationCodeableConcept": {
            "coding": [{"system": system, "code": code, "display": display}],
            "text": display,
        },
        "dosageInstruction": [dosage],
    }


def mapped(resource: dict[str, Any], terms: Terminology) -> MedicationExposure | None:
    result = map_resource(resource, terms)
    if result is None:
        return None
    assert isinstance(result.fact, MedicationExposure)
    return result.fact


@pytest.mark.parametrize(
    ("code", "display", "system", "valueset"),
    [
        ("1649946", "1 ML filgrastim 0.3 MG/ML Injection [Neupogen]", RXNORM, "gcsf"),
        ("2595961", "0.8 ML filgrastim-ayow 0.6 MG/ML Prefilled Syringe", RXNORM, "gcsf"),
        ("2260704", "0.6 ML pegfilgrastim-bmez 10 MG/ML Prefilled Syringe", RXNORM, "gcsf"),
        ("2101459", "Granix 300 MCG in 1 ML Injection", RXNORM, "gcsf"),
        ("L03AA09", "sargramostim", ATC, "gcsf"),
        (
            "562508",
            "amoxicillin 875 MG / clavulanate 125 MG Oral Tablet",
            RXNORM,
            "anti_infectives_systemic",
        ),
        ("1665021", "ceftriaxone 1000 MG Injection", RXNORM, "anti_infectives_systemic"),
        (
            "476556",
            "emtricitabine 200 MG / tenofovir disoproxil fumarate 300 MG Oral Tablet",
            RXNORM,
            "anti_infectives_systemic",
        ),
        ("2568661", "5 ML cyclophosphamide 200 MG/ML Injection", RXNORM, "cyclophosphamide"),
        ("210639", "cyclophosphamide 50 MG Oral Tablet [Cytoxan]", RXNORM, "cyclophosphamide"),
        ("1442693", "obinutuzumab 1000 MG in 40 ML Injection", RXNORM, "sle_immunosuppressants"),
        ("L04AG11", "anifrolumab", ATC, "sle_immunosuppressants"),
        ("L01FA03", "obinutuzumab", ATC, "sle_immunosuppressants"),
        ("2105834", "50 ML rituximab-abbs 10 MG/ML Injection", RXNORM, "sle_immunosuppressants"),
        (
            "1664463",
            "24 HR tacrolimus 1 MG Extended Release Oral Tablet",
            RXNORM,
            "sle_immunosuppressants",
        ),
        (
            "1743729",
            "methylprednisolone 1000 MG Injection [Solu-Medrol]",
            RXNORM,
            "glucocorticoids",
        ),
        ("238755", "hydrocortisone sodium succinate 100 MG Injection", RXNORM, "glucocorticoids"),
    ],
)
def test_clinical_drug_codes_reach_their_value_set(
    terms: Terminology, code: str, display: str, system: str, valueset: str
) -> None:
    found = mapped(request(code, display, system=system), terms)
    assert found is not None, f"{system}|{code} ({display}) is in no value set"
    assert valueset in found.concepts


@pytest.mark.parametrize(
    ("code", "display", "valueset"),
    [
        ("106258", "Hydrocortisone 10 MG/ML Topical Cream", "glucocorticoids"),
        (
            "2572292",
            "0.4 ML cyclosporine 0.5 MG/ML Ophthalmic Suspension",
            "sle_immunosuppressants",
        ),
    ],
)
def test_topical_and_ophthalmic_forms_stay_out(
    terms: Terminology, code: str, display: str, valueset: str
) -> None:
    _, concepts = terms.resolve([Code(RXNORM, code, display)])
    assert valueset not in concepts


def test_iv_methylprednisolone_pulse_dose_in_prednisone_equivalents(terms: Terminology) -> None:
    resource = request(
        "1743726",
        "methylprednisolone 1000 MG Injection",
        dose={"value": 500, "unit": "mg", "system": UCUM, "code": "mg"},
    )
    found = mapped(resource, terms)
    assert found is not None
    assert found.daily_dose_mg == 500
    assert found.prednisone_factor == pytest.approx(1.25)


def test_dose_pack_tablets_convert_to_mg(terms: Terminology) -> None:
    resource = request(
        "762675",
        "{21 (methylprednisolone 4 MG Oral Tablet) } Pack",
        dose={"value": 2, "unit": "tablet", "system": UCUM, "code": "{tablet}"},
        per_day=3,
    )
    found = mapped(resource, terms)
    assert found is not None
    assert found.daily_dose_mg == 24  # 2 tablets x 4 mg x 3 a day
    assert found.prednisone_factor == pytest.approx(1.25)


def test_injection_has_no_per_unit_strength(terms: Terminology) -> None:
    """A dose in vials is not converted: the vial content is not a dose."""
    resource = request(
        "1743726",
        "methylprednisolone 1000 MG Injection",
        dose={"value": 1, "unit": "tablet", "system": UCUM, "code": "{tablet}"},
    )
    found = mapped(resource, terms)
    assert found is not None
    assert found.daily_dose_mg is None


def test_old_antibiotic_order_without_end_is_a_short_course(terms: Terminology) -> None:
    found = mapped(
        request("308192", "amoxicillin 500 MG Oral Tablet", authored="1980-05-04T10:00:00Z"),
        terms,
    )
    assert found is not None
    covered = exposure(found, date(2026, 6, 1), terms)
    assert covered is not None
    assert (covered.start, covered.end) == (
        date(1980, 5, 4),
        date(1980, 5, 17),
    )  # a 14-day course: days 1-14
    assert "14-day" in covered.basis


def test_open_gcsf_order_runs_to_the_day_asked(terms: Terminology) -> None:
    found = mapped(request("1649944", "1 ML filgrastim 0.3 MG/ML Injection"), terms)
    assert found is not None
    covered = exposure(found, date(2026, 3, 20), terms)
    assert covered is not None
    assert covered.end == date(2026, 3, 20)


def test_open_glucocorticoid_order_has_no_default_course(terms: Terminology) -> None:
    found = mapped(request("312615", "predniSONE 20 MG Oral Tablet"), terms)
    assert found is not None
    covered = exposure(found, date(2026, 9, 1), terms)
    assert covered is not None
    assert covered.end == date(2026, 9, 1)


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("91936005", "Allergy to penicillin (finding)"),
        ("764146007", "Penicillin (substance)"),
        ("387406002", "Sulfonamide (substance)"),
        ("372665008", "Non-steroidal anti-inflammatory agent (substance)"),
        ("426722004", "Iodinated contrast media (substance)"),
        ("293970004", "Allergy to metoprolol (finding)"),
    ],
)
def test_snomed_drug_allergens(terms: Terminology, code: str, display: str) -> None:
    _, concepts = terms.resolve([Code(SNOMED, code, display)])
    assert "drug_allergen" in concepts
    assert terms.valuesets["drug_allergen"].kind == "allergen"


@pytest.mark.parametrize(
    ("code", "display"),
    [("762952008", "Peanut (substance)"), ("111088007", "Latex (substance)")],
)
def test_food_and_latex_are_not_drug_allergens(terms: Terminology, code: str, display: str) -> None:
    _, concepts = terms.resolve([Code(SNOMED, code, display)])
    assert "drug_allergen" not in concepts


@pytest.mark.parametrize(
    ("text", "valueset"),
    [
        ("重组人粒细胞刺激因子注射液\uff08瑞白\uff09", "gcsf"),  # full-width brackets
        ("Neulasta Onpro kit", "gcsf"),
        ("特尔津 150ug 皮下注射", "gcsf"),  # brands sent as a local code's text
        ("注射用重组人粒细胞巨噬细胞刺激因子", "gcsf"),
        ("赛可平 0.5g bid", "sle_immunosuppressants"),
        ("注射用环磷酰胺 0.4g 静滴", "cyclophosphamide"),
        ("泰它西普 160mg 皮下注射", "sle_immunosuppressants"),
        ("Saphnelo 300 mg IV", "sle_immunosuppressants"),
        ("阿莫西林克拉维酸钾片", "anti_infectives_systemic"),
        ("Levaquin 500 mg tablet", "anti_infectives_systemic"),  # brand names, local codes
        ("Rocephin 1 g IV q24h", "anti_infectives_systemic"),
        ("注射用哌拉西林钠他唑巴坦钠(特治星)", "anti_infectives_systemic"),
        ("可乐必妥 左氧氟沙星片 0.5g", "anti_infectives_systemic"),
        ("奥硝唑氯化钠注射液", "anti_infectives_systemic"),
        ("注射用甲泼尼龙琥珀酸钠 500mg", "glucocorticoids"),
        ("磺胺类药物过敏", "drug_allergen"),
        ("Sulfa allergy - hives", "drug_allergen"),
    ],
)
def test_review_terms_flag_uncoded_text(terms: Terminology, text: str, valueset: str) -> None:
    assert valueset in terms.review_matches(text)


@pytest.mark.parametrize("text", ["insulin resistance", "Pegfilgrastimulation", "CTX bone marker"])
def test_review_terms_ignore_lookalikes(terms: Terminology, text: str) -> None:
    assert not terms.review_matches(text) & {
        "gcsf",
        "cyclophosphamide",
        "drug_allergen",
    }


def test_brand_names_match_whole_words_only(terms: Terminology) -> None:
    """ "Cipro" names ciprofloxacin tablets; "Ciprodex" (ear drops) is another word."""
    assert "anti_infectives_systemic" in terms.review_matches("Cipro XR 500 mg")
    assert "anti_infectives_systemic" not in terms.review_matches("Ciprodex otic suspension")
