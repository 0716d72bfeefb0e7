"""A coding's `system` as hospital feeds send it: by OID, by name, by edition URI, with https or
a trailing slash, or as a national modification of ICD-10 (terminology/code_systems.csv).

Each must name the same code system as its canonical URI, on every path that reads codes (the
mappers, stage 1's byte prefilter, coded result values), and a record coded only in systems no
table covers, with nothing to read, must count as "could be anything", never as absence.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from service.facts import Diagnosis, MedicationExposure
from service.mappers import map_resource
from service.routing import Router
from service.vocab.systems import CodeSystems, CodeSystemsError
from tests.conftest import AS_OF, load_terms
from tests.realworld import CLINICAL, coding, ehr_condition, ehr_observation, run_ehr

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("urn:oid:2.16.840.1.113883.6.96", SNOMED),
        ("2.16.840.1.113883.6.96", SNOMED),  # a bare OID
        ("snomed ct", SNOMED),  # a name, any case
        ("SCT", SNOMED),  # HL7 v2 table 0396
        ("http://snomed.info/sct/900000000000207008", SNOMED),  # an edition URI
        ("http://snomed.info/sct/731000124108/version/20250901", SNOMED),
        ("https://snomed.info/sct", SNOMED),
        ("http://loinc.org/", LOINC),  # a trailing slash
        ("https://loinc.org/", LOINC),
        ("LN", LOINC),
        (" urn:oid:2.16.840.1.113883.6.1 ", LOINC),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10CM),
        ("urn:oid:2.16.840.1.113883.6.3", ICD10),
        ("http://hl7.org/fhir/sid/icd-10-cn", ICD10),  # read by its WHO category
        ("http://fhir.de/CodeSystem/bfarm/icd-10-gm", ICD10),
        ("urn:oid:2.16.840.1.113883.6.88", RXNORM),
        ("RxNorm", RXNORM),
    ],
)
def test_each_way_of_sending_names_the_canonical_system(sent: str, canonical: str) -> None:
    assert load_terms().canonical_system(sent) == canonical


@pytest.mark.parametrize(
    "local",
    [
        "http://hospital.example.cn/fhir/CodeSystem/lab",
        "urn:oid:1.2.156.112604.1.2.3",  # a hospital's own OID
        "http://snomed.info/sctx",  # not an edition URI: the prefix is "sct/"
        "LOCAL",
    ],
)
def test_a_local_system_stays_as_sent(local: str) -> None:
    assert load_terms().canonical_system(local) == local


def test_the_table_refuses_an_unknown_match_kind() -> None:
    with pytest.raises(CodeSystemsError, match="bad row"):
        CodeSystems.from_rows([{"sent": "X", "system": SNOMED, "match": "fuzzy", "note": ""}])


def test_the_longest_prefix_wins() -> None:
    systems = CodeSystems.from_rows(
        [
            {"sent": "http://example.org/", "system": "http://a", "match": "prefix"},
            {"sent": "http://example.org/b/", "system": "http://b", "match": "prefix"},
        ]
    )
    assert systems.canonical("http://example.org/b/1") == "http://b"
    assert systems.canonical("http://example.org/c") == "http://a"


def test_a_national_modification_matches_by_its_who_category() -> None:
    terms = load_terms()
    # M32.100x001 (China's clinical modification) lies under the WHO subcategory M32.1.
    assert "sle" in terms.concepts_of_code("http://hl7.org/fhir/sid/icd-10-cn", "M32.100x001")
    assert "sle" not in terms.concepts_of_code("http://hl7.org/fhir/sid/icd-10-cn", "M35.100")


def test_a_condition_sent_by_oid_is_the_same_diagnosis() -> None:
    mapped = _fact(ehr_condition(coding("urn:oid:2.16.840.1.113883.6.96", "22298006")))
    assert isinstance(mapped, Diagnosis)
    assert "cardiac_severe" in mapped.concepts
    assert mapped.codes[0].system == SNOMED  # evidence cites the canonical system


def test_a_coded_result_value_sent_by_oid_is_read() -> None:
    answer = coding("urn:oid:2.16.840.1.113883.6.96", "260385009")
    day = (AS_OF - timedelta(days=10)).isoformat()
    result = run_ehr([ehr_observation("5196-1", answer, effective=day)], "E10.hbv")
    assert "surface antigen (qualitative) negative" in result.reason


def test_stage_one_keeps_an_observation_coded_by_oid() -> None:
    """The byte prefilter drops lines whose code no value set reads: it must ask with the
    canonical system, or an OID-coded hemoglobin is never screened."""
    router = Router(load_terms())
    line = orjson.dumps(
        {
            "resourceType": "Observation",
            "code": {"coding": [coding("urn:oid:2.16.840.1.113883.6.1", "718-7")]},
            "id": "o1",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 5.4, "unit": "g/dL"},
        }
    )
    route = router(line)
    assert route.kept
    assert route.patient == "Patient/p1"
    heart_rate = line.replace(b'"718-7"', b'"8867-4"')
    assert not router(heart_rate).relevant


def _fact(resource: dict[str, Any]) -> object:
    mapped = map_resource(resource, load_terms())
    return None if mapped is None else mapped.fact


# ------------------------------------------------------------------ unmapped is not absent
def _local_condition(display: str | None) -> dict[str, Any]:
    return ehr_condition(coding("http://hl7.org/fhir/sid/icd-9-cm", "428.0", display))


def test_a_diagnosis_in_no_covered_system_with_no_text_could_be_any_diagnosis() -> None:
    terms = load_terms()
    mapped = _fact(_local_condition(None))
    assert isinstance(mapped, Diagnosis)
    assert mapped.concepts == frozenset()
    assert mapped.review == terms.valuesets_of_kind("diagnosis")
    assert {"cardiac_severe", "sle", "malignancy"} <= mapped.review


def test_the_exclusion_it_could_be_is_unknown_not_pass() -> None:
    result = run_ehr([_local_condition(None)], "E6")
    assert result.verdict == "unknown"
    assert "ICD-9-CM 428.0, a code system no table covers" in result.reason


def test_a_display_is_read_instead() -> None:
    """With text, the review terms decide (as for any local code): heart failure text is not
    among E2's terms, so E2 passes; nothing is assumed about it."""
    mapped = _fact(_local_condition("Congestive heart failure, unspecified"))
    assert mapped is None or "ttp_tma" not in mapped.review
    assert run_ehr([_local_condition("Congestive heart failure, unspecified")], "E2").verdict == (
        "pass"
    )


def test_a_code_of_a_covered_system_that_no_table_lists_is_not_of_its_sets() -> None:
    """SNOMED CT tables are expansions: an unlisted SNOMED CT code (essential hypertension),
    even without a display, is known not to be a severe cardiac disease."""
    condition = ehr_condition(coding(SNOMED, "59621000"))
    assert run_ehr([condition], "E6").verdict == "pass"


def test_an_order_coded_only_by_ndc_without_text_could_be_an_anti_infective() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": (AS_OF - timedelta(days=3)).isoformat(),
        "medicationCodeableConcept": {
            "coding": [coding("http://hl7.org/fhir/sid/ndc", "65862-0015-01")]
        },
    }
    mapped = _fact(order)
    assert isinstance(mapped, MedicationExposure)
    assert "anti_infectives_systemic" in mapped.review
    assert run_ehr([order], "E4").verdict == "unknown"


def test_the_clinical_status_system_is_untouched() -> None:
    """Canonicalising applies to codes, not to the status systems read by their own rules."""
    condition = ehr_condition(coding(SNOMED, "22298006"))
    assert condition["clinicalStatus"]["coding"][0]["system"] == CLINICAL
    assert run_ehr([condition], "E6").verdict == "fail"


# ------------------------------------------------------------------ broad history categories
@pytest.mark.parametrize(
    ("system", "code", "text", "criterion"),
    [
        (ICD10, "Z86.7", "陈旧性脑梗死", "E5"),  # history of circulatory disease: an old stroke
        (ICD10CM, "Z92.21", "History of chemotherapy for breast cancer", "E8"),
        (ICD10, "Z86.1", "肺结核病史", "E4"),  # a history of TB kept active on the list
    ],
)
def test_a_broad_history_category_is_reviewed_by_its_text(
    system: str, code: str, text: str, criterion: str
) -> None:
    condition = ehr_condition(coding(system, code), text=text, onset="2019-01-01")
    result = run_ehr([condition], criterion)
    assert result.verdict == "unknown", result.reason
    assert "not in the value set): review" in result.reason


def test_a_resolved_history_is_no_active_infection() -> None:
    condition = ehr_condition(
        coding(ICD10, "Z86.1"), text="肺结核病史", onset="2019-01-01", clinical="resolved"
    )
    assert run_ehr([condition], "E4").verdict == "pass"


def test_other_icd_codes_outside_the_tables_are_still_not_read_by_text() -> None:
    """Old MI I25.2 is left out of severe cardiac disease on purpose, whatever its text."""
    condition = ehr_condition(coding(ICD10, "I25.2"), text="陈旧性心肌梗死", onset="2019-01-01")
    assert run_ehr([condition], "E6").verdict == "pass"
    assert not load_terms().reads_text_of(ICD10, "I25.2")
    assert load_terms().reads_text_of("urn:oid:2.16.840.1.113883.6.3", "Z867")


# ------------------------------------------------------------------ review exclusions
@pytest.mark.parametrize(
    ("text", "reviewed"),
    [
        ("Past pregnancy history of miscarriage (situation)", False),  # Synthea's situation
        ("Not pregnant", False),
        ("否认妊娠", False),
        ("既往妊娠史 G2P1", False),
        ("Pregnancy with history of preterm labour", True),  # a current pregnancy
        ("妊娠合并既往剖宫产史", True),
        ("Pregnant, 12 weeks", True),
    ],
)
def test_pregnancy_review_terms_skip_past_and_denied_pregnancies(text: str, reviewed: bool) -> None:
    assert ("pregnancy" in load_terms().review_matches(text)) is reviewed


# ------------------------------------------------------------------ text of unlisted codes
@pytest.mark.parametrize(
    ("display", "criterion"),
    [
        ("Primary adenocarcinoma of colon", "E8"),  # one word: "carcinoma" alone missed it
        ("Glioblastoma multiforme of frontal lobe", "E8"),
        ("左侧颞叶胶质母细胞瘤", "E8"),
    ],
)
def test_compound_tumour_names_are_reviewed(display: str, criterion: str) -> None:
    condition = ehr_condition(coding(SNOMED, "1234567001", display), onset="2020-03-01")
    assert run_ehr([condition], criterion).verdict == "unknown"


@pytest.mark.parametrize(
    ("loinc", "display", "criterion"),
    [
        ("5196-1", "Chronic hepatitis B virus infection with HBeAg positive", "E10.hbv"),
        ("56888-1", "Human immunodeficiency virus infection with tuberculosis", "E10.hiv"),
    ],
)
def test_a_negative_test_beside_a_diagnosis_named_only_in_text_is_reviewed(
    loinc: str, display: str, criterion: str
) -> None:
    """A coded chronic infection beside a negative test is `unknown` (one is wrong); one that
    only its text names must be too, not a pass on the negative test."""
    negative = coding(SNOMED, "260385009")
    day = (AS_OF - timedelta(days=10)).isoformat()
    condition = ehr_condition(coding(SNOMED, "1234567001", display), onset="2019-01-01")
    result = run_ehr([ehr_observation(loinc, negative, effective=day), condition], criterion)
    assert result.verdict == "unknown", result.reason
    assert "but possible" in result.reason


@pytest.mark.parametrize(
    ("text", "valueset"),
    [
        ("Severe aortic stenosis", "cardiac_severe"),  # valve disease with its severity stated
        ("重度二尖瓣狭窄", "cardiac_severe"),
        ("焦虑状态", "psychiatric_severe"),
        ("宫内孕8周", "pregnancy"),
    ],
)
def test_review_terms_read_these_texts(text: str, valueset: str) -> None:
    assert valueset in load_terms().review_matches(text)


def test_valve_disease_of_unstated_severity_is_not_reviewed_as_severe() -> None:
    assert "cardiac_severe" not in load_terms().review_matches("Aortic stenosis, mild")
