"""PatientFacts (service/facts.py): the per-concept lookups the criteria make.

Labs, diagnoses and medications are indexed by concept as they are added; each lookup must
answer exactly what a scan of the whole record would, in the order the facts were added.
"""

from __future__ import annotations

from datetime import date

from service.facts import Code, Diagnosis, LabResult, MedicationExposure, PatientFacts

DAY = date(2026, 11, 20)


def _lab(name: str, *concepts: str) -> LabResult:
    return LabResult(
        reference=f"Observation/{name}",
        codes=(Code("http://loinc.org", name),),
        concepts=frozenset(concepts),
        effective=DAY,
        status="final",
    )


def _dx(name: str, *concepts: str) -> Diagnosis:
    return Diagnosis(
        reference=f"Condition/{name}",
        codes=(),
        concepts=frozenset(concepts),
        clinical_status="active",
        verification_status="confirmed",
        onset=DAY,
        abatement=None,
        recorded=None,
    )


def _med(name: str, *concepts: str) -> MedicationExposure:
    return MedicationExposure(
        reference=f"MedicationStatement/{name}",
        codes=(),
        concepts=frozenset(concepts),
        status="active",
        start=DAY,
        end=None,
    )


# Mixed concepts: one record in two value sets, another in none.
LABS = [
    _lab("a", "wbc"),
    _lab("b", "hemoglobin"),
    _lab("c", "wbc", "neutrophils_abs"),
    _lab("d"),
    _lab("e", "wbc"),
]


def _scan(labs: list[LabResult], concept: str) -> list[LabResult]:
    return [lab for lab in labs if concept in lab.concepts]


def test_labs_for_answers_as_a_scan_in_the_order_added() -> None:
    facts = PatientFacts("Patient/p1")
    facts.extend(LABS)
    for concept in ("wbc", "hemoglobin", "neutrophils_abs", "alt"):
        assert facts.labs_for(concept) == _scan(LABS, concept), concept
    assert [lab.reference for lab in facts.labs_for("wbc")] == [
        "Observation/a",
        "Observation/c",
        "Observation/e",
    ]
    assert facts.labs == LABS


def test_facts_given_to_the_constructor_are_indexed_too() -> None:
    facts = PatientFacts("Patient/p1", labs=list(LABS))
    assert facts.labs_for("wbc") == _scan(LABS, "wbc")
    facts.add(_lab("f", "wbc"))
    assert [lab.reference for lab in facts.labs_for("wbc")][-1] == "Observation/f"


def test_a_lookup_returns_a_new_list() -> None:
    facts = PatientFacts("Patient/p1")
    facts.extend(LABS)
    found = facts.labs_for("wbc")
    found.clear()  # callers sort and filter what they get
    assert len(facts.labs_for("wbc")) == 3
    assert facts.labs_for("alt") == []


def test_diagnoses_and_medications_for_answer_as_a_scan() -> None:
    diagnoses = [_dx("a", "sle"), _dx("b", "malignancy", "malignancy_exceptions"), _dx("c", "sle")]
    medications = [_med("a", "glucocorticoids"), _med("b", "gcsf"), _med("c", "glucocorticoids")]
    facts = PatientFacts("Patient/p1")
    facts.extend([*diagnoses, *medications])
    assert facts.diagnoses_for("sle") == [diagnoses[0], diagnoses[2]]
    assert facts.diagnoses_for("malignancy_exceptions") == [diagnoses[1]]
    assert facts.medications_for("glucocorticoids") == [medications[0], medications[2]]
    assert facts.medications_for("sle") == []
    assert facts.diagnoses == diagnoses
    assert facts.medications == medications


def test_concepts_name_the_value_sets_with_a_record_as_added() -> None:
    facts = PatientFacts("Patient/p1", labs=list(LABS[:2]))
    labs, diagnoses = facts.lab_concepts(), facts.diagnosis_concepts()
    assert set(labs) == {"wbc", "hemoglobin"}
    assert set(diagnoses) == set()
    facts.extend([LABS[2], LABS[3], _dx("a", "sle")])  # views: later records show at once
    assert set(labs) == {"wbc", "hemoglobin", "neutrophils_abs"}
    assert set(diagnoses) == {"sle"}
    # a lab's value set is no diagnosis's, and the other way round
    assert "sle" not in labs
    assert "wbc" not in diagnoses
    for concept in ("wbc", "hemoglobin", "neutrophils_abs", "alt", "sle"):
        assert (concept in labs) == bool(facts.labs_for(concept)), concept
        assert (concept in diagnoses) == bool(facts.diagnoses_for(concept)), concept
