"""screen_patient: one patient's raw resources -> result, in any order, named by Type/id."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.patient_screen import (
    Record,
    ScreeningContext,
    canonical_order,
    load_screening_context,
    screen_patient,
    screen_patient_records,
)
from service.screening import ScreenOptions, screen
from service.synthetic import make_condition, make_observation, make_patient
from tests.conftest import ROOT, TRIAL_PATH
from tests.population import GENERATED_AS_OF, by_patient, generated

DEMO_AS_OF = date(2026, 11, 20)
SHUFFLES = 4


@pytest.fixture(scope="module")
def context() -> ScreeningContext:
    return load_screening_context(TRIAL_PATH, ROOT / "terminology", GENERATED_AS_OF)


@pytest.fixture(scope="module")
def generated_population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated(tmp_path_factory.mktemp("population") / "p60", patients=60, seed=11)


def _shuffles(resources: list[Any], seed: int) -> Iterator[list[Any]]:
    rng = random.Random(seed)  # noqa: S311 - a seeded shuffle, not a secret
    yield list(reversed(resources))
    for _ in range(SHUFFLES):
        shuffled = list(resources)
        rng.shuffle(shuffled)
        yield shuffled


def _assert_order_independent(
    population: dict[str, list[dict[str, Any]]], context: ScreeningContext
) -> None:
    for index, (reference, resources) in enumerate(sorted(population.items())):
        expected = orjson.dumps(screen_patient(resources, context, patient=reference))
        for shuffled in _shuffles(resources, seed=index):
            got = orjson.dumps(screen_patient(shuffled, context, patient=reference))
            assert got == expected, reference


def test_demo_results_do_not_depend_on_the_order_of_the_resources(
    context: ScreeningContext,
) -> None:
    demo = context.on(DEMO_AS_OF)
    population = by_patient(ROOT / "demo", demo.terms)
    assert len(population) >= 30
    _assert_order_independent(population, demo)


def test_generated_results_do_not_depend_on_the_order_of_the_resources(
    context: ScreeningContext, generated_population: Path
) -> None:
    population = by_patient(generated_population, context.terms)
    assert len(population) == 60
    _assert_order_independent(population, context)


def test_a_shuffled_export_gives_byte_identical_results(
    generated_population: Path, tmp_path: Path
) -> None:
    """The whole screen, its files' lines shuffled (and the Observations split in two files):
    every result, its evidence and problems included, is the same bytes."""
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rng = random.Random(5)  # noqa: S311 - a seeded shuffle, not a secret
    for path in sorted(generated_population.glob("*.ndjson")):
        lines = path.read_bytes().splitlines(keepends=True)
        rng.shuffle(lines)
        half = len(lines) // 2
        (shuffled / path.name).write_bytes(b"".join(lines[:half]))
        (shuffled / f"more-{path.name}").write_bytes(b"".join(lines[half:]))
    runs = [
        screen(
            data,
            TRIAL_PATH,
            ROOT / "terminology",
            GENERATED_AS_OF,
            options=ScreenOptions(partitions=partitions),
        )
        for data, partitions in ((generated_population, 1), (shuffled, 3))
    ]
    try:
        first, second = ([orjson.dumps(r) for r in run.results()] for run in runs)
        assert len(first) == 60
        assert first == second
    finally:
        for run in runs:
            run.close()


def test_canonical_order_is_by_type_then_id_then_content() -> None:
    a = {"resourceType": "Observation", "id": "b", "status": "final"}
    b = {"resourceType": "Condition", "id": "z"}
    twice_1 = {"resourceType": "Observation", "id": "a", "status": "final"}
    twice_2 = {"status": "amended", "id": "a", "resourceType": "Observation"}
    records = [(a, "f:1"), (twice_1, "f:2"), (b, "f:3"), (twice_2, "f:4")]
    for shuffled in _shuffles(records, seed=1):
        assert [r for r, _ in canonical_order(shuffled)] == [b, twice_2, twice_1, a]


def _sle_condition(patient: str, cid: str, onset: str) -> dict[str, Any]:
    return make_condition(
        cid, patient, system="http://snomed.info/sct", code="55464009", onset=onset
    )


def test_an_unreadable_record_is_named_by_its_reference_not_where_it_was_read(
    context: ScreeningContext,
) -> None:
    patient = make_patient("u1", birth_date="1980-01-01", gender="female")
    broken = _sle_condition("Patient/u1", "u1-c1", "2020-01-01")
    broken["onsetDateTime"] = "not a date"
    screened = screen_patient_records(
        [
            Record(orjson.dumps(patient), "Patient.ndjson:1"),
            Record(orjson.dumps(broken), "Condition.ndjson:7"),
            Record(b'{"resourceType": "Observation", "id": "trunc', "Observation.ndjson:3"),
        ],
        context,
    )
    result = screened.result
    assert result.patient.reference == "Patient/u1"
    [problem] = result.problems
    assert problem.startswith("Condition/u1-c1: ")
    assert "Condition.ndjson" not in problem
    # the unreadable SLE diagnosis withholds the diagnosis verdict, citing the record
    [i1] = [c for c in result.criteria if c.id == "I1"]
    assert i1.verdict == "unknown"
    assert "(Condition/u1-c1)" in i1.reason
    # the run's list says where each was read; a line that is no JSON has only that
    assert [(u.reference, u.where) for u in screened.unreadable] == [
        (None, "Observation.ndjson:3"),
        ("Condition/u1-c1", "Condition.ndjson:7"),
    ]
    assert str(screened.unreadable[1]).startswith("Condition.ndjson:7: Condition/u1-c1: ")


def test_dicts_bytes_and_text_give_the_same_result(context: ScreeningContext) -> None:
    resources = [
        make_patient("b1", birth_date="1975-05-05", gender="female"),
        make_observation(
            "b1-hgb", "Patient/b1", "2026-11-01", code="718-7", value=12.5, unit="g/dL"
        ),
        _sle_condition("Patient/b1", "b1-c1", "2019-03-01"),
    ]
    as_dicts = orjson.dumps(screen_patient(resources, context))
    as_bytes = orjson.dumps(screen_patient([orjson.dumps(r) for r in resources], context))
    as_text = orjson.dumps(screen_patient([orjson.dumps(r).decode() for r in resources], context))
    assert as_dicts == as_bytes == as_text


def test_the_patient_must_be_named_when_the_resources_name_several(
    context: ScreeningContext,
) -> None:
    one = make_patient("x1", birth_date="1975-05-05", gender="female")
    other = _sle_condition("Patient/x2", "x2-c1", "2019-03-01")
    with pytest.raises(ValueError, match="2 patients"):
        screen_patient([one, other], context)
    result = screen_patient([one, other], context, patient="Patient/x1")
    assert result.patient.reference == "Patient/x1"
    assert all("x2-c1" not in orjson.dumps(c).decode() for c in result.criteria)


def test_the_context_pickles_as_its_paths_and_screens_alike(context: ScreeningContext) -> None:
    pickled = pickle.dumps(context)
    assert len(pickled) < 2_000  # the paths, not the code tables
    restored = pickle.loads(pickled)  # noqa: S301 - our own bytes
    assert restored.as_of == context.as_of
    assert restored.trial.id == context.trial.id
    resources = [make_patient("k1", birth_date="1990-02-02", gender="male")]
    assert orjson.dumps(screen_patient(resources, restored)) == orjson.dumps(
        screen_patient(resources, context)
    )


def _gcsf_bundle(*patients: str) -> dict[str, Any]:
    """A collection Bundle: one Medication (its fullUrl a urn:uuid, no id), and for each
    patient an ANC and an active order naming the Medication by that urn:uuid."""
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    medication = {
        "resourceType": "Medication",
        "code": {"coding": [{"system": rxnorm, "code": "68442"}]},
    }
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:7f3a", "resource": medication}]
    for pid in patients:
        anc = make_observation(
            f"{pid}-anc", pid, "2026-11-20", code="751-8", value=2.0, unit="10*9/L"
        )
        order = {
            "resourceType": "MedicationRequest",
            "id": f"{pid}-mr",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{pid}"},
            "medicationReference": {"reference": "urn:uuid:7f3a"},
            "authoredOn": "2026-11-15",
        }
        entries += [
            {"resource": make_patient(pid, "1990-01-01", "female")},
            {"resource": anc},
            {"resource": order},
        ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def test_a_bundle_s_medications_serve_every_patient_in_it(context: ScreeningContext) -> None:
    """screen_patient given a Bundle reads its entries; a urn:uuid reference finds the
    Medication entry, for each patient of the Bundle."""
    bundle = _gcsf_bundle("b1", "b2")
    day = context.on(date(2026, 11, 27))
    for pid in ("b1", "b2"):
        result = screen_patient([bundle], day, patient=f"Patient/{pid}")
        (anc,) = [c for c in result.criteria if c.id == "I6.anc"]
        assert anc.verdict == "unknown"
        assert f"Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/{pid}-mr)" in (
            anc.reason
        )
    alone = screen_patient([_gcsf_bundle("b1")], day)  # one patient: no `patient` needed
    assert alone.patient.reference == "Patient/b1"
    assert bundle["entry"][0]["resource"] == _gcsf_bundle()["entry"][0]["resource"]  # unchanged
