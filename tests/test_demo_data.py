"""The bundled demo population: valid FHIR R4, and each case shows what it is named after."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from service.screening import ScreenRun, screen
from tests.conftest import ROOT, TRIAL_PATH

DEMO = ROOT / "demo" / "NCT06946485"
EXPECTED = json.loads(
    (Path(__file__).parent / "data" / "demo_expected.json").read_text(encoding="utf-8")
)
# Deliberately broken records (ids "<patient>-broken-...") show a bad resource is skipped.
BROKEN_ON_PURPOSE = "-broken-"


@pytest.fixture(scope="module")
def demo_run() -> ScreenRun:
    run = screen(DEMO, TRIAL_PATH, ROOT / "terminology", date(2026, 11, 20))
    yield run  # type: ignore[misc]
    run.close()


@pytest.fixture(scope="module")
def results(demo_run: ScreenRun) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["patient"]["reference"]: r for r in demo_run.results()}


def test_demo_has_thirty_plus_patients_and_every_status(results: dict) -> None:  # type: ignore[type-arg]
    assert len(results) >= 30
    assert {r["status"] for r in results.values()} == {
        "likely_eligible",
        "possibly_eligible",
        "ineligible",
    }


def test_demo_exercises_pass_fail_and_unknown_of_every_automatic_criterion(results: dict) -> None:  # type: ignore[type-arg]
    seen: dict[str, set[str]] = {}
    for result in results.values():
        for criterion in result["criteria"]:
            seen.setdefault(criterion["id"], set()).add(criterion["verdict"])
    automatic = {
        c["id"] for c in next(iter(results.values()))["criteria"] if c["assessment"] == "automatic"
    }
    for criterion_id in automatic - {"I4"}:
        assert {"pass", "fail"} <= seen[criterion_id], (
            f"{criterion_id}: demo shows only {seen[criterion_id]}"
        )
    # I4 is never failed from absent records: it passes or stays unknown.
    assert seen["I4"] == {"pass", "unknown"}
    # The unknown path of the criteria whose data a coordinator most often has to chase.
    for criterion_id in ("I1", "I3", "I5", "I6.anc", "I6.hgb", "E4", "E10.hbv", "E10.hiv"):
        assert "unknown" in seen[criterion_id], criterion_id


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_each_case_shows_what_it_is_named_after(slug: str, results: dict) -> None:  # type: ignore[type-arg]
    expected = EXPECTED[slug]
    result = results[expected["patient"]]
    verdicts = {c["id"]: (c["verdict"], c["reason"]) for c in result["criteria"]}
    for criterion_id, verdict in expected["criteria"].items():
        assert verdicts[criterion_id][0] == verdict, (
            f"{slug} {criterion_id}: {verdicts[criterion_id]}"
        )
    assert result["status"] == expected["status"], (
        f"{slug}: {[(k, v) for k, v in verdicts.items() if v[0] != 'pass']}"
    )


@pytest.mark.parametrize("path", sorted(DEMO.glob("*.json")), ids=lambda p: p.stem)
def test_demo_files_are_valid_fhir_r4(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for e in bundle["entry"] if BROKEN_ON_PURPOSE not in e["resource"]["id"]]
    kept = {"resourceType": "Bundle", "type": bundle["type"], "entry": entries}
    Bundle.model_validate(kept)


def test_demo_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_demo_data.py"),
            "--out",
            str(tmp_path),
            "--expected",
            str(tmp_path / "expected.json"),
        ],
        check=True,
        capture_output=True,
    )
    for path in DEMO.glob("*.json"):
        assert (tmp_path / path.name).read_text(encoding="utf-8") == path.read_text(
            encoding="utf-8"
        ), path.name
    assert json.loads((tmp_path / "expected.json").read_text(encoding="utf-8")) == EXPECTED
