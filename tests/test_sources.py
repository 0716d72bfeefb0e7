"""Reading Bundles and NDJSON: every resource comes with where it was read; bad input is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.sources import Chunk, LineReader, chunks, observation_prefilter, read_chunk
from service.terminology import Terminology
from tests.factories import HGB, LOINC, obs
from tests.mappers.test_map_resource import JUNK, paths, replaced

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


# ---------------------------------------------------------------- passing over Observations
SITE = "http://hospital.example.org/fhir"  # terminology/site_code_map.csv
HEART_RATE = {"system": LOINC, "code": "8867-4", "display": "Heart rate"}  # in no value set
HEMOGLOBIN = {"system": LOINC, "code": HGB}


def observation_line(code: Any, **members: Any) -> bytes:
    """A compact NDJSON line, as a Bulk export writes it."""
    resource = obs(HGB, 120, "g/L")
    resource.update(code=code, **members)
    return orjson.dumps(resource) + b"\n"


@pytest.fixture
def irrelevant(terms: Terminology) -> Callable[[bytes], bool]:
    return observation_prefilter(terms.may_match)


def test_an_observation_no_value_set_uses_is_passed_over_unparsed(
    irrelevant: Callable[[bytes], bool],
) -> None:
    assert irrelevant(observation_line({"coding": [HEART_RATE]}))
    assert irrelevant(observation_line({"coding": [HEART_RATE]}).rstrip())  # last line
    assert irrelevant(observation_line({"coding": [HEART_RATE, {"system": LOINC}], "text": "HR"}))
    assert irrelevant(observation_line({"coding": [{**HEART_RATE, "display": "HR [/min]"}]}))
    # `code` as the first member, and the cached verdict given twice
    first = b'{"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org",'
    first += b'"code":"8867-4"}]},"subject":{"reference":"Patient/p1"}}\r\n'
    assert irrelevant(first)
    assert irrelevant(first)


def test_a_panel_whose_component_a_value_set_may_use_is_read(
    irrelevant: Callable[[bytes], bool],
) -> None:
    """A CBC panel's own code is in no value set; its WBC component is (a LIS's panel)."""
    component = [{"code": {"coding": [HEMOGLOBIN]}, "valueQuantity": {"value": 50, "unit": "g/L"}}]
    assert not irrelevant(observation_line({"coding": [HEART_RATE]}, component=component))


RELEVANT_CODES = {
    "second coding": {"coding": [HEART_RATE, HEMOGLOBIN]},
    "code before system": {"coding": [{"code": HGB, "system": LOINC}]},
    "padded with spaces": {"coding": [{"system": LOINC, "code": f" {HGB} "}]},
    "padded with a no-break space": {"coding": [{"system": LOINC, "code": f"\u00a0{HGB}"}]},
    "site code": {"coding": [{"system": f"{SITE}/CodeSystem/lab", "code": "ALT"}]},
    "ICD-10 child, lower case, no dot": {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "m3214"}]
    },
    "}] in an earlier display": {
        "coding": [{**HEART_RATE, "display": "rate }] (sic)"}, HEMOGLOBIN]
    },
    "]} in an earlier display": {
        "coding": [{**HEART_RATE, "display": "rate ]} (sic)"}, HEMOGLOBIN]
    },
    "text after the codings": {"coding": [HEMOGLOBIN], "text": "Hb"},
}


@pytest.mark.parametrize("code", RELEVANT_CODES.values(), ids=RELEVANT_CODES.keys())
def test_an_observation_a_value_set_may_use_is_always_read(
    irrelevant: Callable[[bytes], bool], terms: Terminology, code: dict[str, Any]
) -> None:
    line = observation_line(code)
    assert terms.may_match(orjson.loads(line)["code"])  # the case is what it claims to be
    assert not irrelevant(line)


def test_an_escaped_code_is_read(irrelevant: Callable[[bytes], bool]) -> None:
    line = observation_line({"coding": [HEMOGLOBIN]}).replace(b'"718-7"', b'"718\\u002d7"')
    assert b"718-7" not in line
    assert orjson.loads(line)["code"]["coding"][0]["code"] == HGB
    assert not irrelevant(line)


NOT_PASSED_OVER = {
    # `may_match` answers True for a missing or malformed code, and the mapper reports it.
    "no code, a component's code": observation_line(
        None, component=[{"id": "c1", "code": {"coding": [HEART_RATE]}}]
    ).replace(b'"code":null,', b""),
    "code is a string": observation_line("8867-4"),
    "a coding that is not an object": observation_line({"coding": [HEART_RATE, "8867-4"]}),
    # Where the top-level code is not plain to see, the line is parsed.
    "an object before the code": b'{"resourceType":"Observation","meta":{"versionId":"1"},'
    + observation_line({"coding": [HEART_RATE]})[len(b'{"resourceType":"Observation",') :],
    "spaced JSON": json.dumps(orjson.loads(observation_line({"coding": [HEART_RATE]}))).encode(),
    "truncated": observation_line({"coding": [HEART_RATE]})[:-20] + b"\n",
    "trailing garbage after the object": observation_line({"coding": [HEART_RATE]})[:-1] + b"x\n",
    "not an Observation": observation_line({"coding": [HEART_RATE]}).replace(
        b"Observation", b"Condition", 1
    ),
}


@pytest.mark.parametrize("line", NOT_PASSED_OVER.values(), ids=NOT_PASSED_OVER.keys())
def test_a_line_whose_code_is_not_plain_to_see_is_parsed(
    irrelevant: Callable[[bytes], bool], line: bytes
) -> None:
    assert b"8867-4" in line
    assert not irrelevant(line)


def test_line_reader_passes_over_lines_and_still_reports_bad_ones(
    tmp_path: Path, irrelevant: Callable[[bytes], bool]
) -> None:
    heart_rate = observation_line({"coding": [HEART_RATE]})
    hemoglobin = observation_line({"coding": [HEMOGLOBIN]})
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(heart_rate + hemoglobin + heart_rate[:-20] + b"\n" + b"\n" + heart_rate)
    reader = LineReader(Chunk(str(path)), irrelevant)
    items = list(reader)
    assert [where.rsplit(":", 1)[1] for _, where, _, _ in items] == ["2", "3"]
    resource, _, error, line = items[0]
    assert resource is not None
    assert (resource["code"]["coding"][0]["code"], error, line) == (HGB, None, hemoglobin)
    assert items[1][0] is None
    assert items[1][2] is not None
    assert items[1][2].startswith("not valid JSON")
    assert reader.skipped == 2
    # Without a prefilter every line is read, as by read_chunk.
    unfiltered = LineReader(Chunk(str(path)))
    everything = [where for _, where, _ in read_chunk(Chunk(str(path)))]
    assert [where for _, where, _, _ in unfiltered] == everything
    assert unfiltered.skipped == 0


def test_bundle_entries_come_without_a_line(tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": obs(HGB, 120, "g/L")}]}
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle))
    [(resource, where, error, line)] = list(LineReader(Chunk(str(path)), lambda _line: True))
    assert resource is not None
    assert (where, error, line) == (f"{path}#entry[0]", None, None)


@pytest.mark.parametrize("code", [HEART_RATE, HEMOGLOBIN], ids=["heart-rate", "hemoglobin"])
def test_no_malformed_variant_of_an_observation_is_passed_over_unless_unused(
    irrelevant: Callable[[bytes], bool], terms: Terminology, code: dict[str, Any]
) -> None:
    """Each field of the line replaced by junk in turn: whatever is passed over parses, is
    an Observation, and has a code no value set uses."""
    base = orjson.loads(observation_line({"coding": [HEART_RATE, code], "text": "x"}))
    passed_over = 0
    for path in paths(base):
        for junk in JUNK:
            line = orjson.dumps(replaced(base, path, junk)) + b"\n"
            if not irrelevant(line):
                continue
            passed_over += 1
            resource = orjson.loads(line)
            assert resource["resourceType"] == "Observation", (path, junk)
            assert not terms.may_match(resource.get("code")), (path, junk)
    assert passed_over > 0  # the check is not vacuous
