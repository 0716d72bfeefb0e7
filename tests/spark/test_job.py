"""The Spark job against the single-machine screen: the same bytes for every patient."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings
from service.screening import ScreenOptions, ScreenRun, screen
from service.spark import SparkInput, spark_screen
from service.spark.__main__ import main as job_main
from service.sweeps import SweepStore
from tests.conftest import ROOT, TRIAL_PATH
from tests.population import GENERATED_AS_OF, generated

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TERMINOLOGY = ROOT / "terminology"


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated(tmp_path_factory.mktemp("population") / "p30", patients=30, seed=13)


def _results(run: ScreenRun) -> list[bytes]:
    try:
        return [orjson.dumps(r) for r in run.results()]
    finally:
        run.close()


def _cli(data: Path) -> ScreenRun:
    return screen(data, TRIAL_PATH, TERMINOLOGY, GENERATED_AS_OF)


def _spark(spark: SparkSession, data: Path | SparkInput, **kwargs: Any) -> ScreenRun:
    return spark_screen(data, TRIAL_PATH, TERMINOLOGY, GENERATED_AS_OF, spark=spark, **kwargs)


def test_every_patient_gets_the_cli_result_and_rank(
    spark: SparkSession, population: Path, tmp_path: Path
) -> None:
    """Verdicts, evidence, scores and rank: byte for byte, with the Parquet beside them."""
    cli = _cli(population)
    counts = cli.counts()
    expected = _results(cli)
    parquet = tmp_path / "out.parquet"
    run = _spark(spark, population, options=ScreenOptions(partitions=3), parquet_out=str(parquet))
    assert run.counts() == counts
    assert _results(run) == expected
    assert len(expected) == 30
    table = spark.read.parquet(str(parquet))
    assert table.count() == 30
    row = table.where(table.reference == json.loads(expected[0])["patient"]["reference"]).first()
    assert row is not None
    assert orjson.loads(bytes(row["result"]))["status"] == row["status"]


def test_a_patient_spread_over_files_and_formats_is_screened_once(
    spark: SparkSession, population: Path, tmp_path: Path
) -> None:
    """Observations in two directories, Conditions in Parquet: each patient meets their
    records again in the shuffle, and the results do not change."""
    expected = _results(_cli(population))
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for path in population.glob("*.ndjson"):
        if path.name == "Condition.ndjson":
            continue
        lines = path.read_bytes().splitlines(keepends=True)
        (first / path.name).write_bytes(b"".join(lines[::2]))
        (second / f"more-{path.name}").write_bytes(b"".join(lines[1::2]))
    conditions = [(line,) for line in (population / "Condition.ndjson").read_text().splitlines()]
    parquet = tmp_path / "conditions.parquet"
    spark.createDataFrame(conditions, "resource string").write.parquet(str(parquet))
    source = SparkInput((str(first), str(second), str(parquet)))
    assert _results(_spark(spark, source, options=ScreenOptions(partitions=4))) == expected


def test_a_medication_in_its_own_file_is_broadcast_to_every_patient(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Demo p71's order names `Medication/<id>`, here in Medication.ndjson apart from the
    patient (as Bulk exports it): Spark gives the single-machine result, G-CSF read."""
    as_of = date(2026, 11, 20)
    by_type: dict[str, list[bytes]] = {}
    for name in ("p71-g-csf-order-naming-a-separate-medication", "p01-likely-eligible-si-units"):
        bundle = json.loads((ROOT / "demo" / "NCT06946485" / f"{name}.json").read_text())
        for entry in bundle["entry"]:
            resource = entry["resource"]
            by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    data = tmp_path / "bulk"
    data.mkdir()
    for kind, lines in by_type.items():
        (data / f"{kind}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    assert len(by_type["Medication"]) == 1
    expected = _results(screen(data, TRIAL_PATH, TERMINOLOGY, as_of))
    run = spark_screen(
        data, TRIAL_PATH, TERMINOLOGY, as_of, spark=spark, options=ScreenOptions(partitions=2)
    )
    assert _results(run) == expected
    results = [json.loads(r) for r in expected]
    p71 = next(r for r in results if r["patient"]["reference"] == "Patient/p71")
    anc = next(c for c in p71["criteria"] if c["id"] == "I6.anc")
    assert "of Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/" in anc["reason"]


def test_unreadable_lines_are_counted_and_listed(
    spark: SparkSession, population: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(population, data)
    patient = json.loads((data / "Patient.ndjson").read_text().splitlines()[0])["id"]
    bad = [
        b'{"resourceType":"Observation","id":"cut',  # truncated
        b'{"id":"no-type"}',  # no resource
        orjson.dumps(  # names no patient
            {
                "resourceType": "Condition",
                "id": "orphan",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
            }
        ),
        orjson.dumps(  # cannot be mapped: a Problem of its patient, named by Type/id
            {
                "resourceType": "Condition",
                "id": "bad-onset",
                "subject": {"reference": f"Patient/{patient}"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
                "onsetDateTime": "2020-13-45",
            }
        ),
    ]
    (data / "Bad.ndjson").write_bytes(b"\n".join(bad) + b"\n")
    cli = _cli(data)
    cli_errors = [e.message for e in cli.errors]
    cli_count = cli.error_count
    expected = _results(cli)
    run = _spark(spark, data, options=ScreenOptions(partitions=2))
    assert run.error_count == cli_count == 4
    # the same messages (orjson's detail differs: Spark's lines come without their newline)
    assert sorted(e.message.split(" (")[0] for e in run.errors) == sorted(
        m.split(" (")[0] for m in cli_errors
    )
    wheres = [e.where for e in run.errors]
    assert f"{data / 'Bad.ndjson'}@0" in wheres  # the truncated line: file and byte offset
    assert any(e.message.startswith("Condition/bad-onset: ") for e in run.errors)
    assert _results(run) == expected


def test_empty_partitions_and_an_empty_input(spark: SparkSession, tmp_path: Path) -> None:
    demo = ROOT / "demo" / "NCT06946485"
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(demo.glob("*.json"))[:2]:
        shutil.copy(path, few / path.name)
    expected = _results(_cli(few))
    assert len(expected) == 2
    eight = ScreenOptions(partitions=8)  # six groups hold nobody
    assert _results(_spark(spark, few, options=eight)) == expected
    empty = tmp_path / "empty"
    empty.mkdir()
    run = _spark(spark, empty)
    assert run.counts()["patients"] == 0
    assert _results(run) == []


def test_the_job_writes_parquet_and_the_json_csv_contract(
    spark: SparkSession, population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del spark  # the job finds the session the fixture started
    local = tmp_path / "local"
    code = job_main(
        [
            "--data",
            str(population),
            "--out",
            str(tmp_path / "parquet"),
            "--local-out",
            str(local),
            "--as-of",
            GENERATED_AS_OF.isoformat(),
        ]
    )
    assert code == 0
    body = json.loads((local / "results.json").read_text())
    assert len(body["candidates"]) == 30
    assert [c["rank"] for c in body["candidates"]] == list(range(1, 31))
    assert (local / "results.csv").read_text().count("\n") == 31
    assert "30 patients" in capsys.readouterr().err


def test_sweep_engine_spark_is_stored_like_any_sweep(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    del spark
    db_url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    monkeypatch.setenv("COHORT_MATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    runner = CliRunner(env={"COLUMNS": "200"})
    args = ["sweep", "--trial", "NCT06946485", "--as-of", "2026-11-20"]
    local = runner.invoke(app, args)
    assert local.exit_code == 0, local.output
    on_spark = runner.invoke(app, [*args, "--engine", "spark", "--spark-master", "local[2]"])
    assert on_spark.exit_code == 0, on_spark.output
    assert "17 likely eligible, 18 possibly eligible, 36 ineligible" in on_spark.stdout
    assert "Since run 1 (2026-11-20)" in on_spark.stdout
    diff = runner.invoke(app, ["diff", "1", "2", "--format", "json"])
    assert diff.exit_code == 0, diff.output
    assert json.loads(diff.stdout)["dropped"] == []
    store = SweepStore(db_url)
    try:
        first, second = sorted(store.runs(), key=lambda r: r.id)
        assert first.counts == second.counts
        assert second.status == "completed"
    finally:
        store.close()
    get_settings.cache_clear()
