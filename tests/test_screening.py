"""Screening a population from files: grouping, partitions, worker processes, bad input."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from service.screening import screen
from tests.conftest import ROOT, TRIAL_PATH

DEMO = ROOT / "demo"
DEMO_AS_OF = date(2026, 11, 20)
TERMINOLOGY = ROOT / "terminology"


def _ndjson_population(tmp_path: Path) -> Path:
    """The demo Bundles rewritten as Bulk-style NDJSON: one file per type, patients interleaved."""
    by_type: dict[str, list[str]] = {}
    for path in sorted((DEMO / "NCT06946485").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            resource = entry["resource"]
            by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    out = tmp_path / "bulk"
    out.mkdir()
    for kind, lines in by_type.items():
        (out / f"{kind}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _statuses(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.reference: s.status for s in run.summaries}


def test_bundles_and_bulk_ndjson_give_the_same_results(tmp_path: Path) -> None:
    bundles = screen(DEMO, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    bulk = screen(_ndjson_population(tmp_path), TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, partitions=7)
    try:
        assert len(bundles.summaries) >= 30
        assert _statuses(bundles) == _statuses(bulk)
        assert [s.reference for s in bundles.summaries] == [s.reference for s in bulk.summaries]
    finally:
        bundles.close()
        bulk.close()


@pytest.mark.slow
def test_worker_processes_give_the_same_ranked_results(tmp_path: Path) -> None:
    data = _ndjson_population(tmp_path)
    single = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, workers=1, partitions=3)
    multi = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, workers=2, partitions=3)
    try:
        assert [r for r in single.results()] == [r for r in multi.results()]
    finally:
        single.close()
        multi.close()


def test_ranked_results_are_ordered_and_numbered() -> None:
    run = screen(DEMO, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    try:
        results = list(run.results())
        order = {"likely_eligible": 0, "possibly_eligible": 1, "ineligible": 2}
        keys = [(order[r["status"]], -r["score"]) for r in results]
        assert keys == sorted(keys)
        assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
        counts = run.counts()
        assert counts["patients"] == len(results)
        assert counts["likely_eligible"] + counts["possibly_eligible"] + counts[
            "ineligible"
        ] == len(results)
    finally:
        run.close()


def test_a_malformed_file_and_resource_are_reported_and_the_run_completes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("truncated-bundle.json", "mixed-lines.ndjson"):
        (data / name).write_bytes(
            (Path(__file__).parent / "data" / "malformed" / name).read_bytes()
        )
    run = screen(data, TRIAL_PATH, TERMINOLOGY, date(2026, 11, 27))
    try:
        assert {s.reference for s in run.summaries} == {"Patient/m1", "Patient/m2"}
        messages = [str(e) for e in run.errors]
        assert any("truncated-bundle.json: not valid JSON" in m for m in messages)
        assert any("mixed-lines.ndjson:3: not valid JSON" in m for m in messages)
        assert any("Condition/m1-c1" in m and "not a FHIR date" in m for m in messages)
        assert run.error_count == 4
        m1 = next(r for r in run.results() if r["patient"]["reference"] == "Patient/m1")
        # The unreadable SLE Condition is not evidence of absence: I1 cannot fail.
        verdicts = {c["id"]: c["verdict"] for c in m1["criteria"]}
        assert verdicts["I1"] == "unknown"
        assert verdicts["I6.hgb"] == "pass"
        # ... but it was an SLE code, so exclusions about other diagnoses still pass.
        assert verdicts["E2"] == "pass"
        assert any("m1-c1" in p for p in m1["problems"])
    finally:
        run.close()


def test_an_interrupted_screen_leaves_no_spool_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import service.screening as screening

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(screening, "_evaluate_partition", interrupted)
    with pytest.raises(KeyboardInterrupt):
        screen(DEMO, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    assert list(tmp_path.glob("cohort-match-*")) == []
