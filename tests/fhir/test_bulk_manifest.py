"""Reading a completed export's manifest and its error/deleted lines
(service/fhir/bulk/manifest.py): pure, no HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from service.errors import FhirMalformedResponse
from service.fhir.bulk.manifest import deleted_in, issues_in, parse_manifest

JOB = "http://fhir.test/fhir/bulk-status/job1"


def body(**fields: object) -> bytes:
    manifest = {
        "transactionTime": "2026-11-20T08:00:00.123Z",
        "request": "http://fhir.test/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "http://fhir.test/files/p.ndjson", "count": 2}],
        **fields,
    }
    return json.dumps(manifest).encode()


def test_a_manifest_is_read_with_its_files_counts_and_expiry() -> None:
    manifest = parse_manifest(
        body(error=[{"type": "OperationOutcome", "url": "errors.ndjson"}]),
        "Tue, 01 Jan 2030 00:00:00 GMT",
        JOB,
    )
    assert manifest.transaction_time == datetime(2026, 11, 20, 8, 0, 0, 123000, tzinfo=UTC)
    assert manifest.requires_access_token is True
    assert [(i.type, i.url, i.count) for i in manifest.output] == [
        ("Patient", "http://fhir.test/files/p.ndjson", 2)
    ]
    assert manifest.error[0].url == "http://fhir.test/fhir/bulk-status/errors.ndjson", "relative"
    assert manifest.deleted == ()
    assert manifest.expires == datetime(2030, 1, 1, tzinfo=UTC)


def test_a_missing_requires_access_token_means_send_it() -> None:
    content = json.loads(body())
    del content["requiresAccessToken"]
    assert parse_manifest(json.dumps(content).encode(), None, JOB).requires_access_token is True


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not an object"),
        (body(transactionTime="yesterday"), "transactionTime"),
        (body(transactionTime="2026-11-20T08:00:00"), "without offset"),
        (body(output={"type": "Patient"}), "not a list"),
        (body(output=[{"type": "Patient"}]), "without type and url"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_job(content: bytes, complaint: str) -> None:
    with pytest.raises(FhirMalformedResponse, match=complaint) as caught:
        parse_manifest(content, None, JOB)
    assert caught.value.url == JOB


def test_error_lines_become_issues_and_bad_lines_are_issues_too() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "bad Obs"}],
    }
    (issue,) = issues_in(json.dumps(outcome), "e.ndjson:1")
    assert (issue.severity, issue.code, issue.text, issue.source) == (
        "error",
        "processing",
        "bad Obs",
        "e.ndjson:1",
    )
    assert issues_in("{", "e:2")[0].text == "unreadable error line"
    assert issues_in('{"resourceType":"Patient"}', "e:3")[0].text == "not an OperationOutcome"


def test_deleted_lines_name_type_and_id_and_anything_else_is_unreadable() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/o1"}},
            {"request": {"method": "DELETE", "url": "Condition/c1/_history/3"}},
        ],
    }
    assert deleted_in(json.dumps(bundle)) == ["Observation/o1", "Condition/c1"]
    bundle["entry"][0]["request"]["method"] = "PUT"
    for line in (json.dumps(bundle), "{", '{"resourceType":"Patient"}', "[]"):
        with pytest.raises(ValueError, match="unreadable"):
            deleted_in(line)
