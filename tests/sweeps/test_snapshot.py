"""Snapshots between incremental runs: merge, deletions, keys, and what may be reused."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from service.sweeps.snapshot import SnapshotInfo, Snapshots, snapshot_key

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
Resource = dict[str, Any]


def obs(ident: str, patient: str, value: float, code: str = "718-7") -> Resource:
    return {
        "resourceType": "Observation",
        "id": ident,
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value},
    }


def export_dir(path: Path, *lines: Resource | bytes) -> Path:
    path.mkdir(parents=True)
    with (path / "Observation-1.ndjson").open("wb") as out:
        for line in lines:
            out.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")
    return path


def keep_hemoglobin(resource: Resource) -> bool:
    codings = (resource.get("code") or {}).get("coding") or [{}]
    return resource["resourceType"] == "Patient" or codings[0].get("code") == "718-7"


def lines_of(snapshot: Path) -> dict[str, Resource]:
    resources = [json.loads(x) for x in (snapshot / "resources.ndjson").read_bytes().splitlines()]
    keys = (snapshot / ".keys").read_text().splitlines()
    assert keys == [f"{r['resourceType']}/{r['id']}" for r in resources]
    return dict(zip(keys, resources, strict=True))


def build(
    snapshots: Snapshots, run_id: int, export: Path, base: Path | None = None, deleted=()
) -> tuple[Path, Any]:
    builder = snapshots.start(run_id)
    counts = builder.take(export, keep_hemoglobin, base, deleted)
    builder.finish(SnapshotInfo(run_id, snapshots.key, T0, T0, counts.kept + counts.carried))
    snapshots.promote(run_id)
    found = snapshots.latest()
    assert found is not None
    assert found[1].run_id == run_id
    return found[0], counts


def test_a_delta_replaces_removes_and_carries(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    full = export_dir(
        tmp_path / "full",
        {"resourceType": "Patient", "id": "a"},
        {"resourceType": "Patient", "id": "b"},
        obs("o1", "a", 120),
        obs("o2", "b", 58),
        obs("o3", "b", 130),
        obs("noise", "a", 1, code="8302-2"),  # in no value set: not kept
    )
    first, counts = build(snapshots, 1, full)
    assert list(lines_of(first)) == [
        "Patient/a",
        "Patient/b",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
    ]
    assert (counts.read, counts.kept, counts.carried) == (6, 5, 0)

    delta = export_dir(
        tmp_path / "delta",
        obs("o1", "a", 50),  # changed value
        obs("o2", "b", 58, code="8302-2"),  # recoded out of the value set: must leave
        obs("o4", "c", 99),  # new
        obs("o4", "c", 99),  # twice in one delta: once in the snapshot
    )
    second, counts = build(snapshots, 2, delta, first, deleted=["Observation/o3", "Patient/zz"])
    merged = lines_of(second)
    assert list(merged) == ["Patient/a", "Patient/b", "Observation/o1", "Observation/o4"]
    assert merged["Observation/o1"]["valueQuantity"]["value"] == 50
    assert counts.as_dict() == {
        "read": 4,
        "kept": 2,
        "carried": 2,
        "replaced": 2,
        "deleted": 1,
        "unreadable": 0,
        "untracked": 0,
        "unkeyed": 0,
        "patients": 3,  # a and c changed, b lost o2 and o3
    }
    assert not first.exists(), "the older snapshot is removed once the new one is current"


def test_an_unreadable_line_still_replaces_the_version_it_names(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    first, _ = build(snapshots, 1, export_dir(tmp_path / "full", obs("o1", "a", 120)))
    delta = export_dir(tmp_path / "delta", b'{"resourceType":"Observation","id":"o1","valueQ\n')
    builder = snapshots.start(2)
    counts = builder.take(delta, keep_hemoglobin, first)
    assert (counts.unreadable, counts.untracked, counts.replaced) == (1, 0, 1)
    assert lines_of(builder.path) == {}, "the stale version is not screened"
    (error,) = builder.errors
    assert error.where == "Observation/o1"
    assert error.message.startswith("not valid JSON")


def test_an_unreadable_record_is_reported_by_every_run_until_it_comes_anew(
    tmp_path: Path,
) -> None:
    """As a full export would: the broken line is there each time until it is fixed."""
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    broken = b'{"resourceType":"Observation","id":"o1","valueQ\n'
    first, counts = build(snapshots, 1, export_dir(tmp_path / "full", broken, obs("o2", "a", 1)))
    assert counts.unreadable == 1

    builder = snapshots.start(2)
    counts = builder.take(export_dir(tmp_path / "nothing"), keep_hemoglobin, first)
    assert counts.unreadable == 1
    assert [str(e) for e in builder.errors] == [f"Observation/o1: {builder.errors[0].message}"]
    builder.finish(SnapshotInfo(2, snapshots.key, T0, T0, 1))
    snapshots.promote(2)
    second = snapshots.dir / "run-2"

    fixed = snapshots.start(3)
    counts = fixed.take(
        export_dir(tmp_path / "fixed", obs("o1", "a", 120)), keep_hemoglobin, second
    )
    assert (counts.unreadable, fixed.errors) == (0, [])
    assert list(lines_of(fixed.path)) == ["Observation/o2", "Observation/o1"]


def test_a_line_that_names_nothing_makes_the_snapshot_unfit_for_the_next_run(
    tmp_path: Path,
) -> None:
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    first, _ = build(snapshots, 1, export_dir(tmp_path / "full", obs("o1", "a", 120)))
    builder = snapshots.start(2)
    counts = builder.take(export_dir(tmp_path / "delta", b"{not json\n"), keep_hemoglobin, first)
    assert (counts.unreadable, counts.untracked, counts.carried) == (1, 1, 1)
    assert [e.where for e in builder.errors] == ["export:Observation-1.ndjson:1"]


def test_a_resource_without_id_is_screened_once_and_not_carried(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    anonymous = obs("x", "a", 120)
    del anonymous["id"]
    first, counts = build(snapshots, 1, export_dir(tmp_path / "full", anonymous))
    assert counts.unkeyed == 1
    assert json.loads((first / "unkeyed.ndjson").read_bytes()) == anonymous
    second, _ = build(snapshots, 2, export_dir(tmp_path / "delta"), first)
    assert (second / "unkeyed.ndjson").read_bytes() == b""


def test_killed_builds_are_cleared_and_a_snapshot_of_another_key_is_not_used(
    tmp_path: Path,
) -> None:
    root = tmp_path / "snap"
    snapshots = Snapshots(root, "NCT1", "k1")
    snapshots.start(7)  # a run killed while building
    assert snapshots.latest() is None, "a part is never a snapshot"
    build(snapshots, 8, export_dir(tmp_path / "full", obs("o1", "a", 1)))
    assert [p.name for p in snapshots.dir.iterdir()] == ["run-8"]
    assert Snapshots(root, "NCT1", "k2").latest() is None
    (snapshots.dir / "run-8" / ".snapshot.json").write_text("{broken")
    assert snapshots.latest() is None


def test_the_key_names_source_level_trial_and_code_tables() -> None:
    base = ("http://f/fhir", "system", "NCT1", "1", "t1")
    assert snapshot_key(*base) == snapshot_key("http://f/fhir/", *base[1:])
    for index, other in enumerate(("http://g/fhir", "patient", "NCT2", "2", "t2")):
        changed = list(base)
        changed[index] = other
        assert snapshot_key(*changed) != snapshot_key(*base)


def test_the_key_names_the_resource_types_read() -> None:
    """A snapshot taken before MedicationAdministration was read lacks those records."""
    base = ("http://f/fhir", "system", "NCT1", "1", "t1")
    before = snapshot_key(*base, ("Condition", "MedicationRequest"))
    after = snapshot_key(*base, ("Condition", "MedicationRequest", "MedicationAdministration"))
    assert before != after
    assert after == snapshot_key(
        *base, ("MedicationAdministration", "Condition", "MedicationRequest")
    )


def test_a_medication_is_carried_for_the_orders_of_later_deltas(tmp_path: Path) -> None:
    """The population's `keep` (`service.mappers.relevant`) keeps Medication resources, which
    name no patient: an order arriving in a later delta still finds the one it names, and the
    screen of the merged snapshot reads it (the side table)."""
    from service.mappers import relevant
    from service.screening import screen
    from tests.conftest import ROOT, TRIAL_PATH, load_terms

    terms = load_terms()
    snapshots = Snapshots(tmp_path / "snap", "NCT1", "k1")
    medication = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "68442"}]
        },
    }
    full = export_dir(tmp_path / "full", {"resourceType": "Patient", "id": "a"}, medication)
    builder = snapshots.start(1)
    builder.take(full, lambda r: relevant(r, terms))
    builder.finish(SnapshotInfo(1, snapshots.key, T0, T0, 2))
    snapshots.promote(1)
    base = snapshots.latest()
    assert base is not None
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/a"},
        "medicationReference": {"reference": "Medication/med1"},
        "authoredOn": "2026-11-10",
    }
    anc = obs("anc", "a", 2.0, code="751-8") | {
        "status": "final",
        "effectiveDateTime": "2026-11-15",
    }
    anc["valueQuantity"] = {
        "value": 2.0,
        "unit": "10*9/L",
        "system": "http://unitsofmeasure.org",
        "code": "10*9/L",
    }
    delta = export_dir(tmp_path / "delta", order, anc)
    builder = snapshots.start(2)
    counts = builder.take(delta, lambda r: relevant(r, terms), base[0])
    assert (counts.kept, counts.carried) == (2, 2)
    assert "Medication/med1" in lines_of(builder.path)
    run = screen(builder.path, TRIAL_PATH, ROOT / "terminology", dt.date(2026, 11, 20))
    try:
        (result,) = run.results()
    finally:
        run.close()
    (verdict,) = [c for c in result["criteria"] if c["id"] == "I6.anc"]
    assert verdict["verdict"] == "unknown"
    assert (
        "of Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/mr1)"
        in (verdict["reason"])
    )
