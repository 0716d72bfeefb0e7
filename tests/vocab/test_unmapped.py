"""`cohort-match terminology unmapped`: codes no value set of the trial knows, by frequency."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings
from service.criteria.model import valuesets_named
from service.terminology import Terminology
from service.trials import find_trial
from service.vocab.unmapped import unmapped

ROOT = Path(__file__).resolve().parents[2]
POPULATION = ROOT / "tests" / "data" / "terminology" / "population" / "population.ndjson"
SCT = "http://snomed.info/sct"
# codes of the population the tests treat as unknown to the tables: taken out of a temporary
# copy of terminology/, whatever the shipped tables hold today
NOT_IN_TABLES = ("295101000119105", "8867-4", "1792778")
runner = CliRunner(env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unmapped") / "terminology"
    shutil.copytree(ROOT / "terminology", root)
    for path in (root / "valuesets").glob("*.csv"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not any(f",{c}," in line for c in NOT_IN_TABLES)]
        path.write_text("".join(kept), encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _fresh_settings(tables: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COHORT_MATCH_TERMINOLOGY_DIR", str(tables))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def terms(tables: Path) -> Terminology:
    return Terminology.load(tables)


@pytest.fixture(scope="module")
def wanted() -> frozenset[str]:
    trial, _ = find_trial(ROOT / "trials", "NCT06946485")
    return frozenset(valuesets_named(trial))


def test_lists_unknown_codes_by_frequency(terms: Terminology, wanted: frozenset[str]) -> None:
    report = unmapped(POPULATION, terms, wanted)
    rows = {(r.resource_type, r.system, r.code): r for r in report.codes}
    deeper = rows[("Condition", SCT, "295101000119105")]
    assert deeper.count == 2
    assert report.codes[0] is deeper  # most frequent first
    assert "systemic lupus" in deeper.display.lower()
    # review terms of value sets the trial reads ("lupus erythematosus" of lupus_non_sle
    # matches too: a review hint, not a classification), sorted
    assert "sle" in deeper.possible
    assert set(deeper.possible) <= wanted
    assert list(deeper.possible) == sorted(deeper.possible)
    # known codes (SLE, hemoglobin) and a local drug code the site map translates are not
    # listed; the heart rate, a clinical-drug code and a text-only allergy are
    assert ("Condition", SCT, "55464009") not in rows
    assert ("Observation", "http://loinc.org", "718-7") not in rows
    assert not any(r.code == "CTX" for r in report.codes)
    assert rows[("Observation", "http://loinc.org", "8867-4")].possible == ()
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert ("MedicationAdministration", rxnorm, "1792778") in rows
    assert rows[("AllergyIntolerance", "", "")].display == "青霉素"
    chinese = rows[("Condition", "http://hospital.example.org/fhir/CodeSystem/dx", "N-0815")]
    assert chinese.display == "狼疮性肾炎 IV型"  # the text, when the coding has no display
    assert chinese.possible == ("sle",)
    assert report.errors == 1  # the truncated last line
    assert report.resources == 10  # the Patient is not a coded record


def test_a_medication_named_by_reference_is_read_from_its_own_file(
    tmp_path: Path, terms: Terminology, wanted: frozenset[str]
) -> None:
    """Bulk NDJSON: Medication.ndjson comes before MedicationRequest.ndjson by name, but a
    record is counted by its Medication's codes whatever the order of the files."""
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"

    def order(ident: str, reference: str, display: str | None = None) -> dict[str, object]:
        target = {"reference": reference} | ({"display": display} if display else {})
        return {
            "resourceType": "MedicationRequest",
            "id": ident,
            "status": "active",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": target,
        }

    medicines = [
        {
            "resourceType": "Medication",
            "id": "known",
            "code": {"coding": [{"system": rxnorm, "code": "68442"}]},
        },  # filgrastim: gcsf
        {
            "resourceType": "Medication",
            "id": "local",
            "code": {
                "coding": [
                    {"system": "http://hospital.example.org/drug", "code": "Z-9", "display": "Zed"}
                ]
            },
            "ingredient": [
                {"itemCodeableConcept": {"coding": [{"system": rxnorm, "code": "8640"}]}}
            ],
        },
        {
            "resourceType": "Medication",
            "id": "other",
            "code": {
                "coding": [
                    {"system": "http://hospital.example.org/drug", "code": "Q-1", "display": "Q"}
                ]
            },
        },
    ]
    orders = [
        order("o1", "Medication/known"),
        order("o2", "https://ehr.example.org/fhir/Medication/local"),  # prednisone ingredient
        order("o3", "Medication/other"),
        order("o4", "Medication/other"),
        order("o5", "Medication/gone", "Neupogen 300 mcg"),
    ]
    (tmp_path / "MedicationRequest.ndjson").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in orders)
    )
    (tmp_path / "zz-Medication.ndjson").write_bytes(  # read after the orders
        b"".join(orjson.dumps(r) + b"\n" for r in medicines)
    )
    report = unmapped(tmp_path, terms, wanted)
    rows = {(r.resource_type, r.system, r.code): r for r in report.codes}
    assert report.resources == 5  # Medications themselves are not counted
    assert report.unmapped_resources == 3
    assert rows[("MedicationRequest", "http://hospital.example.org/drug", "Q-1")].count == 2
    gone = rows[("MedicationRequest", "", "")]
    assert (gone.count, gone.display, gone.possible) == (1, "Neupogen 300 mcg", ("gcsf",))


def test_the_site_map_counts_as_known(terms: Terminology, wanted: frozenset[str]) -> None:
    report = unmapped(POPULATION, terms, frozenset({"cyclophosphamide"}))
    assert not any(r.code == "CTX" for r in report.codes)
    assert any(r.code == "55464009" for r in report.codes)  # SLE is not in this "trial"
    assert unmapped(POPULATION, terms, wanted).unmapped_resources < report.unmapped_resources


def test_streams_a_population(tmp_path: Path, terms: Terminology, wanted: frozenset[str]) -> None:
    """Memory stays at the size of the counters, not of the population (about 12 MB here)."""
    path = tmp_path / "Condition.ndjson"
    with path.open("wb") as handle:
        for i in range(20_000):
            resource = {
                "resourceType": "Condition",
                "id": f"c{i}",
                "subject": {"reference": f"Patient/p{i}"},
                "code": {"coding": [{"system": SCT, "code": "38341003", "display": "x" * 400}]},
                "note": [{"text": "y" * 200}],
            }
            handle.write(orjson.dumps(resource) + b"\n")
    tracemalloc.start()
    try:
        report = unmapped(path, terms, wanted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.resources == 20_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: the population was held in memory"


def test_cli_table_json_csv() -> None:
    args = ["terminology", "unmapped", "--trial", "NCT06946485", "--data", str(POPULATION)]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "295101000119105" in table.stdout
    assert "possible: sle" in table.stdout
    assert "unmapped" in table.stdout

    result = runner.invoke(app, [*args, "--format", "json", "--limit", "1"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [c["code"] for c in body["codes"]] == ["295101000119105"]
    assert body["codes"][0]["count"] == 2
    assert "sle" in body["codes"][0]["possible"]

    result = runner.invoke(app, [*args, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["code"] == "295101000119105"
    assert "sle" in rows[0]["possible"].split(" ")  # space-separated
    assert {row["resource_type"] for row in rows} >= {"AllergyIntolerance", "Observation"}


def test_cli_type_filter() -> None:
    args = ["terminology", "unmapped", "--data", str(POPULATION), "--format", "json"]
    result = runner.invoke(app, [*args, "--type", "Condition", "--type", "AllergyIntolerance"])
    assert result.exit_code == 0, result.output
    kinds = {c["resource_type"] for c in json.loads(result.stdout)["codes"]}
    assert kinds == {"Condition", "AllergyIntolerance"}
    result = runner.invoke(app, [*args, "--type", "Encounter"])
    assert result.exit_code == 2
    assert "Encounter" in result.stderr


def test_cli_unknown_trial_is_one_line() -> None:
    args = ["terminology", "unmapped", "--trial", "NCT0", "--data", str(POPULATION)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error:" in result.stderr
