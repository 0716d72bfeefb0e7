"""Screening a population from files: grouping, partitions, worker processes, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.screening import ScreenOptions, _partition_count, screen
from service.sources import observation_prefilter
from tests.conftest import ROOT, TRIAL_PATH, load_terms

DEMO = ROOT / "demo"
DEMO_AS_OF = date(2026, 11, 20)
TERMINOLOGY = ROOT / "terminology"


def _ndjson_population(
    tmp_path: Path,
    dumps: Callable[[Any], str] = json.dumps,
    extra: list[str] | None = None,
) -> Path:
    """The demo Bundles rewritten as Bulk-style NDJSON: one file per type, patients
    interleaved; `extra` lines are appended to the Observations."""
    by_type: dict[str, list[str]] = {}
    for path in sorted((DEMO / "NCT06946485").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            resource = entry["resource"]
            by_type.setdefault(resource["resourceType"], []).append(dumps(resource))
    by_type["Observation"] += extra or []
    out = tmp_path / "bulk"
    out.mkdir(exist_ok=True)
    for kind, lines in by_type.items():
        (out / f"{kind}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _compact(resource: Any) -> str:
    return orjson.dumps(resource).decode()


def _statuses(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.reference: s.status for s in run.summaries}


def test_bundles_and_bulk_ndjson_give_the_same_results(tmp_path: Path) -> None:
    bundles = screen(DEMO, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    bulk = screen(
        _ndjson_population(tmp_path),
        TRIAL_PATH,
        TERMINOLOGY,
        DEMO_AS_OF,
        options=ScreenOptions(partitions=7),
    )
    try:
        assert len(bundles.summaries) >= 30
        assert _statuses(bundles) == _statuses(bulk)
        assert [s.reference for s in bundles.summaries] == [s.reference for s in bulk.summaries]
    finally:
        bundles.close()
        bulk.close()


def test_observations_passed_over_unparsed_change_no_result(tmp_path: Path) -> None:
    """Compact NDJSON, whose unused Observations are recognised from their bytes, gives the
    results of spaced NDJSON, whose every line is parsed; a truncated line is reported."""
    first_bundle = next((DEMO / "NCT06946485").glob("*.json")).read_text(encoding="utf-8")
    patient = "Patient/" + json.loads(first_bundle)["entry"][0]["resource"]["id"]

    def observation(oid: str, coding: list[dict[str, str]], value: float, unit: str) -> Any:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": coding},
            "subject": {"reference": patient},
            "effectiveDateTime": "2026-11-10",
            "valueQuantity": {"value": value, "unit": unit},
        }

    heart_rate = {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
    hemoglobin = {"code": "718-7", "system": "http://loinc.org"}  # code first, then system

    def extra(dumps: Callable[[Any], str]) -> list[str]:
        return [
            dumps(observation("x-hr1", [heart_rate], 72, "/min")),
            dumps(observation("x-hgb", [heart_rate, hemoglobin], 5.5, "g/dL")),
            dumps(observation("x-hr2", [heart_rate], 75, "/min"))[:-30],  # truncated
            dumps(observation("x-hr3", [heart_rate], 70, "/min")),
        ]

    outcomes = []
    for dumps in (json.dumps, _compact):  # the same paths and line numbers both times
        data = _ndjson_population(tmp_path, dumps, extra(dumps))
        run = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(partitions=3))
        try:
            outcomes.append((run.counts(), [e.where for e in run.errors], list(run.results())))
        finally:
            run.close()
    spaced, compact = outcomes
    assert compact == spaced
    [result] = [r for r in compact[2] if r["patient"]["reference"] == patient]
    [hgb] = [c for c in result["criteria"] if c["id"] == "I6.hgb"]
    assert hgb["evidence"][0]["reference"] == "Observation/x-hgb"  # read, and deciding
    lines = (data / "Observation.ndjson").read_bytes().splitlines(keepends=True)
    truncated = f"{data / 'Observation.ndjson'}:{len(lines) - 1}"
    assert spaced[1][0] == truncated  # read errors come first
    assert spaced[1].count(truncated) == 1
    irrelevant = observation_prefilter(load_terms().may_match)
    assert sum(map(irrelevant, lines)) >= 2  # compact lines were passed over, unparsed


@pytest.mark.parametrize(
    ("size", "workers", "partitions"),
    [(0, 1, 1), (0, 2, 2), (593_159_201, 1, 11), (593_159_201, 2, 14), (10**12, 3, 255)],
)
def test_partitions_come_in_multiples_of_the_workers(
    size: int, workers: int, partitions: int
) -> None:
    assert _partition_count(size, workers) == partitions


@pytest.mark.slow
def test_worker_processes_give_the_same_ranked_results(tmp_path: Path) -> None:
    data = _ndjson_population(tmp_path)
    single = screen(
        data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(workers=1, partitions=3)
    )
    multi = screen(
        data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(workers=2, partitions=3)
    )
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


def test_records_can_be_named_by_reference_instead_of_file_and_line(tmp_path: Path) -> None:
    """A sweep's snapshot of a FHIR server is no file a user knows: records are named by
    their reference there, in the run's errors, in results and in evidence."""
    bulk = _ndjson_population(tmp_path)
    by_file = screen(bulk, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    by_reference = screen(
        bulk, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(by_reference=True)
    )
    try:
        broken = "Observation/p41-broken-value: Quantity.value is not a number: '1O2'"
        assert broken in [str(e) for e in by_reference.errors]
        assert f"{bulk}/Observation.ndjson" in next(
            str(e) for e in by_file.errors if str(e).endswith(broken)
        )
        p41 = next(r for r in by_reference.results() if r["patient"]["reference"] == "Patient/p41")
        assert p41["problems"] == [broken]
        assert str(tmp_path) not in orjson.dumps(list(by_reference.results())).decode()
        assert _statuses(by_file) == _statuses(by_reference)
    finally:
        by_file.close()
        by_reference.close()


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


def test_one_patient_is_screened_alone_with_the_result_the_full_screen_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.screening as screening
    from service.routing import Router

    data = _ndjson_population(tmp_path)
    run = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(workers=1))
    full = {s.reference: run.result_bytes(s) for s in run.summaries}
    run.close()
    lines = [line for path in data.glob("*.ndjson") for line in path.read_bytes().splitlines()]
    screened: list[str] = []
    routed: list[str | None] = []
    real_screen, real_route = screening.screen_patient_records, Router.resource

    def spy_screen(records: Any, context: Any, **kwargs: Any) -> Any:
        screened.append(kwargs["patient"])
        return real_screen(records, context, **kwargs)

    def spy_route(self: Router, resource: dict[str, Any]) -> Any:
        route = real_route(self, resource)
        routed.append(route.patient)
        return route

    monkeypatch.setattr(screening, "screen_patient_records", spy_screen)
    monkeypatch.setattr(Router, "resource", spy_route)
    # p71's order names a Medication in Medication.ndjson: read for the side table
    for reference in ("Patient/p02", "Patient/p05", "Patient/p71"):
        screened.clear()
        routed.clear()
        one = screening.screen_one(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, reference)
        assert one is not None
        assert orjson.dumps(one.result) == full[reference]
        assert screened == [reference]  # nobody else screened
        # only lines that may name the patient (its id's bytes, or a \u escape) and
        # Medications were parsed and routed, not the population's
        ident = reference.removeprefix("Patient/").encode()
        naming = sum(
            1 for line in lines if ident in line or b"\\u" in line or b'"Medication"' in line
        )
        assert len(routed) <= naming < len(lines) / 4
        assert reference in routed
    assert screening.screen_one(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, "Patient/nobody") is None


def test_the_patient_line_filter_keeps_every_line_that_may_name_the_patient() -> None:
    from service.screening import patient_line_filter

    other = patient_line_filter("Patient/p1")
    assert other is not None
    assert other(b'{"resourceType":"Observation","subject":{"reference":"Patient/p2"}}')
    assert not other(b'{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}')
    assert not other(b'{"resourceType":"Patient","id":"p1"}')
    assert not other(b'{"subject":{"reference":"https://ehr.example/fhir/Patient/p1"}}')
    # a writer may escape any character: such a line is parsed, whoever it names
    assert not other(b'{"resourceType":"Patient","id":"\\u0070\\u0031"}')
    # an id JSON might escape otherwise (not a FHIR id) gets no filter: every line is parsed
    assert patient_line_filter('Patient/a"b') is None
    assert patient_line_filter("Patient/a/b") is None


def test_bundles_spread_over_partitions_give_the_results_of_one(tmp_path: Path) -> None:
    # A Bundle fills only its patient's partition: the others get no file for that chunk.
    ranked = []
    for partitions in (1, 4):
        run = screen(
            DEMO / "NCT06946485",
            TRIAL_PATH,
            TERMINOLOGY,
            DEMO_AS_OF,
            options=ScreenOptions(workers=1, partitions=partitions),
        )
        ranked.append([run.result_bytes(s) for s in run.summaries])
        run.close()
    assert len(ranked[0]) > 1
    assert ranked[0] == ranked[1]


def _criteria(run: Any, reference: str) -> dict[str, dict[str, Any]]:
    summary = next(s for s in run.summaries if s.reference == reference)
    result = orjson.loads(run.result_bytes(summary))
    return {c["id"]: c for c in result["criteria"]}


def test_a_medication_exported_apart_is_read_by_every_patient_naming_it(tmp_path: Path) -> None:
    """Bulk NDJSON: p71's order names `Medication/<id>`, which is in Medication.ndjson, not
    with the patient. Stage 1 keeps it in the side table; the result is the Bundle's."""
    data = _ndjson_population(tmp_path)
    assert (data / "Medication.ndjson").read_text(encoding="utf-8").count("\n") == 1
    bulk = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF, options=ScreenOptions(partitions=3))
    bundles = screen(DEMO, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    try:
        criteria = _criteria(bulk, "Patient/p71")
        assert criteria["I6.anc"]["verdict"] == "unknown"
        assert (
            "of Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/p71-m"
            in (criteria["I6.anc"]["reason"])
        )
        assert criteria["E4"]["verdict"] == "pass"
        assert criteria == _criteria(bundles, "Patient/p71")
        assert list(bulk.spool.glob("medications-*")) == []  # the run's, not kept
    finally:
        bulk.close()
        bundles.close()


def test_without_the_medication_the_order_is_an_unknown_drug(tmp_path: Path) -> None:
    """Unmapped is not absent: p71's active order without its Medication could be G-CSF (the
    count is unknown) and could be an anti-infective taken today (E4 unknown)."""
    data = _ndjson_population(tmp_path)
    (data / "Medication.ndjson").unlink()
    run = screen(data, TRIAL_PATH, TERMINOLOGY, DEMO_AS_OF)
    try:
        criteria = _criteria(run, "Patient/p71")
        anc, e4 = criteria["I6.anc"], criteria["E4"]
        assert anc["verdict"] == e4["verdict"] == "unknown"
        assert "an unknown drug, possibly Colony-stimulating factors" in anc["reason"]
        assert "(not sent with the records)" in anc["reason"]
        assert e4["reason"].startswith("possible Systemic anti-infectives")
        assert "MedicationRequest/p71-m34 names Medication/p71-med33" in e4["reason"]
    finally:
        run.close()
