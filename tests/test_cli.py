"""The command line as a user runs it: screen, explain, trials; one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings

runner = CliRunner(env={"COLUMNS": "220"})
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def test_screen_table_on_the_bundled_demo() -> None:
    result = runner.invoke(app, ["screen", "--trial", "NCT06946485", "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    assert "NCT06946485 candidates as of 2026-11-20" in result.stdout
    assert "Patient/p01" in result.stdout
    assert "likely eligible" in result.stdout
    # The demo's deliberately malformed result is named and skipped, not fatal.
    assert "p41-malformed-and-entered-in-error-results.json#entry" in result.stderr


def test_screen_json_is_the_ranked_list_contract() -> None:
    result = runner.invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["trial"]["id"] == "NCT06946485"
    assert body["as_of"] == "2026-11-20"
    assert body["counts"]["patients"] == len(body["candidates"])
    first = body["candidates"][0]
    assert first["rank"] == 1
    assert first["status"] == "likely_eligible"
    assert {c["id"] for c in first["criteria"]} >= {"I1", "I6.hgb", "E10.syphilis", "E14"}


def test_screen_csv_has_one_column_per_criterion() -> None:
    result = runner.invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["rank"] == "1"
    assert "I6.crcl" in rows[0]
    assert "E10.hbv" in rows[0]
    p05 = next(r for r in rows if r["patient"] == "Patient/p05")
    assert p05["status"] == "ineligible"
    assert p05["I6.hgb"] == "fail"


def test_explain_prints_the_checklist_with_evidence() -> None:
    result = runner.invoke(app, ["explain", "--patient", "p02", "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Patient/p02" in out
    assert "likely_eligible" in out
    assert "Inclusion criteria" in out
    assert "Exclusion criteria" in out
    # US units shown as recorded and converted
    assert "g/dL" in out
    assert "g/L" in out
    assert "What to check next" in out


def test_explain_json_for_one_patient() -> None:
    result = runner.invoke(
        app, ["explain", "--patient", "Patient/p05", "--as-of", "2026-11-20", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    hgb = next(c for c in body["criteria"] if c["id"] == "I6.hgb")
    assert hgb["verdict"] == "fail"
    assert hgb["evidence"][0]["reference"].startswith("Observation/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["screen", "--trial", "NCT00000000"], "unknown trial 'NCT00000000'"),
        (["screen", "--as-of", "20-11-2026"], "--as-of must be a date YYYY-MM-DD"),
        (["screen", "--data", "/nonexistent/path"], "no such file or directory"),
        (
            ["explain", "--patient", "nobody", "--as-of", "2026-11-20"],
            "no records for Patient/nobody",
        ),
    ],
    ids=["unknown-trial", "bad-date", "missing-data", "unknown-patient"],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_malformed_file_is_named_and_the_rest_completes() -> None:
    result = runner.invoke(
        app, ["screen", "--data", str(DATA / "malformed"), "--as-of", "2026-11-27"]
    )
    assert result.exit_code == 0, result.output
    assert "truncated-bundle.json: not valid JSON" in result.stderr
    assert "Patient/m1" in result.stdout
    assert "Patient/m2" in result.stdout


def test_trials_lists_the_served_trials() -> None:
    result = runner.invoke(app, ["trials"])
    assert result.exit_code == 0
    assert "NCT06946485" in result.stdout


def test_a_second_trial_needs_only_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORT_MATCH_TRIALS_DIR", str(DATA / "trials"))
    get_settings.cache_clear()
    result = runner.invoke(
        app, ["screen", "--trial", "DEMO-LN-001", "--as-of", "2026-11-20", "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0])[11:] == ["I1", "I2", "I3", "E1"]
    p01 = next(r for r in rows if r["patient"] == "Patient/p01")
    assert p01["status"] == "likely_eligible"


# ---------------------------------------------------------------- identifiers and death
def _bundle_with_a_deceased_patient(tmp_path: Path) -> Path:
    deceased = json.loads(
        (DATA / "realworld" / "deceased-patient-with-chinese-identifiers.json").read_text(
            encoding="utf-8"
        )
    )
    alive = {
        "resourceType": "Patient",
        "id": "p2",
        "gender": "male",
        "birthDate": "1985-01-01",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "value": "MZ-0002",
            }
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": deceased}, {"resource": alive}],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, ensure_ascii=False), encoding="utf-8")
    return path


def test_csv_carries_mrn_identifiers_and_the_reason_a_deceased_patient_is_out(
    tmp_path: Path,
) -> None:
    data = _bundle_with_a_deceased_patient(tmp_path)
    result = runner.invoke(
        app, ["screen", "--data", str(data), "--as-of", "2026-11-20", "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["patient"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    dead, alive = rows["Patient/p1"], rows["Patient/p2"]
    assert dead["mrn"] == "ZY20260451"
    assert dead["identifiers"] == "MR ZY20260451; NNCHN 320102199003150022; 6217000010001234"
    assert dead["status"] == "ineligible"
    assert dead["status_reason"].startswith("deceased on 2026-09-30")
    assert dead["age"] == "36"  # at death (born 1990-03-15, died 2026-09-30)
    assert (alive["mrn"], alive["status_reason"]) == ("MZ-0002", "")


def test_table_and_json_show_the_mrn_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _bundle_with_a_deceased_patient(tmp_path)
    table = runner.invoke(app, ["screen", "--data", str(data), "--as-of", "2026-11-20"])
    assert table.exit_code == 0, table.output
    assert "ZY20260451" in table.stdout
    assert "deceased on 2026-09-30" in table.stdout
    monkeypatch.setenv("COHORT_MATCH_MRN_TYPE", "NNCHN")
    get_settings.cache_clear()
    body = runner.invoke(
        app, ["screen", "--data", str(data), "--as-of", "2026-11-20", "--format", "json"]
    )
    assert body.exit_code == 0, body.output
    candidates = {c["patient"]["reference"]: c for c in json.loads(body.stdout)["candidates"]}
    dead = candidates["Patient/p1"]
    assert dead["patient"]["mrn"] == "320102199003150022"  # the configured type
    assert dead["patient"]["deceased"] is True
    assert dead["status_reason"].startswith("deceased on 2026-09-30")
    assert len(dead["criteria"]) > 0  # still shown
    assert candidates["Patient/p2"]["patient"]["mrn"] is None


def test_explain_prints_identifiers_and_the_reason(tmp_path: Path) -> None:
    data = _bundle_with_a_deceased_patient(tmp_path)
    result = runner.invoke(
        app, ["explain", "--data", str(data), "--patient", "p1", "--as-of", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    assert "MRN ZY20260451" in result.stdout
    assert "NNCHN 320102199003150022" in result.stdout
    assert "deceased on 2026-09-30" in result.stdout


def test_death_after_as_of_is_no_reason(tmp_path: Path) -> None:
    data = _bundle_with_a_deceased_patient(tmp_path)
    result = runner.invoke(
        app, ["screen", "--data", str(data), "--as-of", "2026-09-29", "--format", "csv"]
    )
    rows = {r["patient"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["Patient/p1"]["status_reason"] == ""


# ---------------------------------------------------------------- the next step
P05_OUT = (
    "fails I6.hgb: Hemoglobin mass concentration in blood 58 g/L >= 60 g/L on 2026-11-10: not met"
)


def test_an_ineligible_patients_next_step_is_why_the_same_in_json_csv_table_and_explain() -> None:
    day = ["--trial", "NCT06946485", "--as-of", "2026-11-20"]
    listed = json.loads(runner.invoke(app, ["screen", *day, "--format", "json"]).stdout)
    by_patient = {c["patient"]["reference"]: c for c in listed["candidates"]}
    assert by_patient["Patient/p05"]["next_step"] == P05_OUT
    # a possibly eligible patient's next step stays the cheapest open check
    possibly = next(c for c in listed["candidates"] if c["status"] == "possibly_eligible")
    assert possibly["next_step"] == possibly["next_steps"][0]
    rows = csv.DictReader(
        io.StringIO(runner.invoke(app, ["screen", *day, "--format", "csv"]).stdout)
    )
    assert {r["patient"]: r["next_step"] for r in rows}["Patient/p05"] == P05_OUT
    table = runner.invoke(app, ["screen", *day]).stdout
    assert "fails I6.hgb: Hemoglobin mass concentration" in table
    explained = runner.invoke(app, ["explain", *day, "--patient", "p05"]).stdout
    assert f"next step: {P05_OUT}" in " ".join(explained.split())


def test_explain_does_not_screen_the_population(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.screening as screening

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("explain screened the whole population")

    monkeypatch.setattr(screening, "screen", refuse)
    result = runner.invoke(
        app, ["explain", "--patient", "p05", "--as-of", "2026-11-20", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["patient"]["reference"] == "Patient/p05"
