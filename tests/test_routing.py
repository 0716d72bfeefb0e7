"""Stage 1's router: a line's patient, whether a screen reads it, or why it cannot be routed."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.routing import RELEVANT_TYPES, Router, relevant_codes
from service.synthetic import make_observation, make_patient
from service.terminology import Terminology
from tests.conftest import ROOT, load_terms

SITE_LAB = ("http://hospital.example.org/fhir/CodeSystem/lab", "ALT")  # site_code_map.csv
HEART_RATE = "8867-4"  # in no value set


def _line(resource: dict[str, object]) -> bytes:
    return orjson.dumps(resource)


def test_relevant_codes_hold_the_value_sets_and_the_site_map() -> None:
    codes = relevant_codes(load_terms())
    assert ("http://loinc.org", "718-7") in codes  # hemoglobin
    assert SITE_LAB in codes  # a local code the site map sends to ALT
    assert ("http://loinc.org", HEART_RATE) not in codes


def test_a_site_map_given_at_load_adds_its_local_codes(tmp_path: Path) -> None:
    extra = tmp_path / "site.csv"
    extra.write_text(
        "local_system,local_code,system,code,note\n"
        "http://clinic.example.org/lab,HB,http://loinc.org,718-7,test\n",
        encoding="utf-8",
    )
    terms = Terminology.load(ROOT / "terminology", extra)
    assert ("http://clinic.example.org/lab", "HB") in relevant_codes(terms)
    route = Router(terms)(
        _line(
            make_observation(
                "o1", "p1", "2026-01-01", code="HB", system="http://clinic.example.org/lab"
            )
        )
    )
    assert (route.patient, route.relevant) == ("Patient/p1", True)


def test_lines_are_routed_to_their_patient_or_passed_over() -> None:
    router = Router(load_terms())
    hgb = router(_line(make_observation("o1", "p1", "2026-01-01", code="718-7", value=12.0)))
    assert (hgb.patient, hgb.relevant, hgb.problem, hgb.kept) == ("Patient/p1", True, None, True)
    site = router(
        _line(make_observation("o2", "p2", "2026-01-01", code=SITE_LAB[1], system=SITE_LAB[0]))
    )
    assert site.kept
    assert site.patient == "Patient/p2"
    heart = router(_line(make_observation("o3", "p1", "2026-01-01", code=HEART_RATE, value=70)))
    assert (heart.relevant, heart.problem, heart.kept) == (False, None, False)
    patient = router(_line(make_patient("p1", "1980-01-01", "female")))
    assert patient.kept
    assert patient.patient == "Patient/p1"
    other = router(b'{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"}}')
    assert not other.relevant
    assert "Encounter" not in RELEVANT_TYPES
    assert {"Patient", "Observation", "Condition"} <= RELEVANT_TYPES


def test_a_panel_is_routed_for_its_components() -> None:
    """A panel whose own code no value set knows (CBC 58410-2) is read for a component that
    one does (WBC 6690-2); one whose components no value set knows is passed over."""
    router = Router(load_terms())
    panel = make_observation("o1", "p1", "2026-01-01", code="58410-2")
    panel["component"] = [{"code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]}}]
    assert router(_line(panel)).relevant
    panel["component"] = [
        {"code": {"coding": [{"system": "http://loinc.org", "code": HEART_RATE}]}}
    ]
    assert not router(_line(panel)).relevant


def test_unroutable_lines_say_why() -> None:
    router = Router(load_terms())
    truncated = router(b'{"resourceType":"Condition","id":"c1","subj')
    assert truncated.problem is not None
    assert truncated.problem.startswith("not valid JSON")
    assert router(b'{"id": "x"}').problem == "not a FHIR resource (no resourceType)"
    orphan = make_observation("o9", "p1", "2026-01-01", code="718-7", value=12.0)
    del orphan["subject"]
    route = router(_line(orphan))
    assert route.patient is None
    assert route.problem is not None
    assert route.problem.startswith("Observation/o9")  # named by its reference


def test_a_medication_routes_to_the_side_table_not_to_a_patient() -> None:
    router = Router(load_terms())
    code = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}]}
    medication = router(_line({"resourceType": "Medication", "id": "med-1", "code": code}))
    assert (medication.shared, medication.patient, medication.problem) == (
        "Medication/med-1",
        None,
        None,
    )
    assert not medication.kept  # with no patient's records: every patient's screen gets it
    assert "Medication" in RELEVANT_TYPES
    anonymous = router(_line({"resourceType": "Medication", "code": code}))
    assert (anonymous.shared, anonymous.relevant, anonymous.problem) == (None, False, None)
