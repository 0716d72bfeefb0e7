"""Reading Bundles and NDJSON: every resource comes with where it was read; bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.sources import Chunk, chunks, read_chunk

DATA = Path(__file__).parent / "data"


def test_ndjson_bad_lines_are_named_and_the_rest_is_read() -> None:
    path = DATA / "malformed" / "mixed-lines.ndjson"
    items = list(read_chunk(Chunk(str(path))))
    good = [(r["id"], where) for r, where, error in items if r is not None]
    bad = [(where, error) for r, where, error in items if r is None]
    assert [rid for rid, _ in good] == ["m1", "m1-o1", "m1-c1", "m2"]
    assert good[0][1].endswith("mixed-lines.ndjson:1")
    assert [where.rsplit(":", 1)[1] for where, _ in bad] == ["3", "4"]
    assert "not valid JSON" in bad[0][1]
    assert "no resourceType" in bad[1][1]


def test_truncated_bundle_is_one_error_naming_the_file() -> None:
    path = DATA / "malformed" / "truncated-bundle.json"
    items = list(read_chunk(Chunk(str(path))))
    assert len(items) == 1
    resource, where, error = items[0]
    assert resource is None
    assert where == str(path)
    assert error is not None
    assert error.startswith("not valid JSON")


def test_bundle_urn_uuid_subjects_resolve_to_the_patient(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:aaa", "resource": {"resourceType": "Patient", "id": "p9"}},
            {
                "fullUrl": "urn:uuid:bbb",
                "resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:aaa"}},
            },
            {"fullUrl": "urn:uuid:ccc"},
        ],
    }
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    items = list(read_chunk(Chunk(str(path))))
    condition = items[1][0]
    assert condition is not None
    assert condition["subject"]["reference"] == "Patient/p9"
    assert condition["id"] == "bbb"  # an entry without id takes its fullUrl's uuid
    assert items[2][0] is None
    assert items[2][1].endswith("#entry[2]")


def test_large_ndjson_is_cut_at_line_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(500)]
    path.write_text("\n".join(lines) + "\n")
    parts = chunks(tmp_path, chunk_bytes=1000)
    assert len(parts) > 5
    ids = [r["id"] for part in parts for r, _, _ in read_chunk(part) if r is not None]
    assert ids == [f"p{i}" for i in range(500)]


def test_missing_input_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="no such file"):
        chunks(missing)
