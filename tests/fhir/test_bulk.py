"""Bulk Data export faults, injected with respx: kick-off, polling, manifest, downloads, fallback.

Sleeps and the clock are fakes: `FakeTime.sleep` records the wait and moves `FakeTime.clock`
on, so a poll limit of an hour passes in microseconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from service.errors import FhirNotFound, FhirUnsafeLink
from service.fhir.auth import StaticBearer
from service.fhir.bulk import (
    BulkExportFailed,
    BulkExportTimeout,
    BulkExportUnsupported,
    BulkFileGone,
    BulkPolicy,
    ExportProgress,
    ExportRequest,
    _LineCounter,
    export,
    export_or_search,
    fhir_instant,
    observation_type_filters,
    plan_types,
    retry_after_s,
    search_to_ndjson,
)
from service.fhir.client import FhirClient, RetryPolicy
from service.fhir.plan import CODES_PER_QUERY, FetchPlan
from service.mappers import SHARED_TYPES

BASE = "http://fhir.test/fhir"
KICK_OFF = f"{BASE}/$export"
JOB = f"{BASE}/bulk-status/job1"
JOB2 = f"{BASE}/bulk-status/job2"
FILES = f"{BASE}/bulk-files"
TRANSACTION_TIME = "2026-11-20T08:00:00.123Z"
HGB = "http://loinc.org|718-7"
PLAN = FetchPlan(observation_codes=(HGB,), other_types=("Condition",))
Resource = dict[str, Any]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def client(**kwargs: Any) -> FhirClient:
    return FhirClient(BASE, retry=RetryPolicy(attempts=2, base_delay_s=0), **kwargs)


def patient(i: int) -> Resource:
    return {"resourceType": "Patient", "id": f"p{i}"}


def observation(i: int, subject: str = "Patient/p1") -> Resource:
    return {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": subject}}


def ndjson(*resources: Resource) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def manifest(
    output: list[Resource], error: list[Resource] | None = None, *, requires: bool = False
) -> Resource:
    return {
        "transactionTime": TRANSACTION_TIME,
        "request": f"{KICK_OFF}?_type=Patient,Observation",
        "requiresAccessToken": requires,
        "output": output,
        "error": error or [],
    }


def item(kind: str, name: str, count: int | None = None, job: str = "job1") -> Resource:
    entry: Resource = {"type": kind, "url": f"{FILES}/{job}/{name}"}
    if count is not None:
        entry["count"] = count
    return entry


def searchset(resources: list[Resource]) -> Resource:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def outcome(code: str, text: str, severity: str = "error") -> Resource:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "details": {"text": text}}],
    }


def kick_off(job: str = JOB) -> respx.Route:
    return respx.get(KICK_OFF).respond(202, headers={"Content-Location": job})


def done(body: Resource) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Expires": "Tue, 01 Jan 2030 00:00:00 GMT"})


def running(progress: str, retry_after: str | None = "1") -> httpx.Response:
    headers = {"X-Progress": progress}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(202, headers=headers)


def simple_job(body: Resource | None = None) -> tuple[respx.Route, respx.Route]:
    """Kick-off, one poll that completes with a Patient file, and the DELETE."""
    kick = kick_off()
    respx.get(JOB).mock(return_value=done(body or manifest([item("Patient", "Patient.ndjson")])))
    delete = respx.delete(JOB).respond(202)
    return kick, delete


# ---------------------------------------------------------------- happy path
@respx.mock
async def test_happy_path_kicks_off_polls_and_downloads(tmp_path: Path) -> None:
    time = FakeTime()
    kick = kick_off()
    respx.get(JOB).mock(
        side_effect=[
            running("10% complete", "2"),
            running("60% complete", "3"),
            done(
                manifest(
                    [
                        item("Patient", "Patient-a.ndjson", 2),
                        item("Patient", "Patient-b.ndjson", 1),
                        item("Observation", "Observation.ndjson", 3),
                    ]
                )
            ),
        ]
    )
    files = {
        "Patient-a.ndjson": ndjson(patient(1), patient(2)),
        "Patient-b.ndjson": ndjson(patient(3)),
        "Observation.ndjson": ndjson(observation(1), observation(2), observation(3)),
    }
    for name, body in files.items():
        respx.get(f"{FILES}/job1/{name}").respond(200, content=body)
    delete = respx.delete(JOB).respond(202)
    seen: list[ExportProgress] = []
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export(
            fhir,
            out,
            ExportRequest.of(["Patient", "Observation"]),
            progress=seen.append,
            sleep=time.sleep,
            clock=time.clock,
        )

    request = kick.calls.last.request
    assert request.headers["Prefer"] == "respond-async, handling=strict"
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.url.params["_type"] == "Patient,Observation"
    assert request.url.params["_outputFormat"] == "application/fhir+ndjson"
    assert "_since" not in request.url.params
    assert time.sleeps == [2.0, 3.0]
    assert [p.message for p in seen if p.stage == "in-progress"] == [
        "10% complete",
        "60% complete",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "Observation-1.ndjson",
        "Patient-1.ndjson",
        "Patient-2.ndjson",
    ]
    assert (out / "Patient-2.ndjson").read_bytes() == files["Patient-b.ndjson"]
    assert result.counts() == {"Patient": 3, "Observation": 3}
    assert [(f.type, f.lines, f.expected) for f in result.files] == [
        ("Patient", 2, 2),
        ("Patient", 1, 1),
        ("Observation", 3, 3),
    ]
    assert result.method == "bulk-export"
    assert result.transaction_time == datetime(2026, 11, 20, 8, 0, 0, 123000, tzinfo=UTC)
    assert result.expires == datetime(2030, 1, 1, tzinfo=UTC)
    assert result.job == JOB
    assert result.kick_offs == 1
    assert result.issues == ()
    assert delete.call_count == 1, "the job is DELETEd once the files are down"


@respx.mock
async def test_transaction_time_feeds_since_as_a_utc_z_instant(tmp_path: Path) -> None:
    kick, _ = simple_job()
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=b"")
    # a clock at a non-UTC offset: the instant sent must still be UTC with Z
    since = datetime(
        2026, 11, 20, 13, 30, 0, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    async with client() as fhir:
        await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"], since=since),
            sleep=FakeTime().sleep,
        )
    assert kick.calls.last.request.url.params["_since"] == "2026-11-20T08:00:00.250Z"


async def test_a_naive_since_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async with client() as fhir:
        with pytest.raises(ValueError, match="timezone-aware"):
            await export(
                fhir, tmp_path / "out", ExportRequest.of(["Patient"], since=datetime(2026, 11, 20))
            )
    assert fhir_instant(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


@respx.mock
async def test_post_kick_off_sends_a_parameters_resource(tmp_path: Path) -> None:
    kick = respx.post(KICK_OFF).respond(202, headers={"Content-Location": JOB})
    respx.get(JOB).mock(return_value=done(manifest([])))
    respx.delete(JOB).respond(202)
    since = datetime(2026, 11, 1, tzinfo=UTC)
    async with client() as fhir:
        result = await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient", "Condition"], since=since, method="POST"),
        )
    body = json.loads(kick.calls.last.request.content)
    assert body["resourceType"] == "Parameters"
    assert {"name": "_type", "valueString": "Patient,Condition"} in body["parameter"]
    assert {"name": "_since", "valueInstant": "2026-11-01T00:00:00.000Z"} in body["parameter"]
    assert result.files == ()


@respx.mock
async def test_type_filters_are_repeated_parameters(tmp_path: Path) -> None:
    kick, _ = simple_job(manifest([]))
    plan = FetchPlan(observation_codes=(HGB, "http://loinc.org|6690-2"))
    filters = observation_type_filters(plan)
    assert filters == [
        "Observation?code=http://loinc.org|718-7",
        "Observation?code=http://loinc.org|6690-2",
    ]
    async with client() as fhir:
        await export(
            fhir, tmp_path / "out", ExportRequest.of(["Observation"], type_filters=filters)
        )
    assert kick.calls.last.request.url.params.get_list("_typeFilter") == filters


# ---------------------------------------------------------------- polling
def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s("Fri, 20 Nov 2026 08:00:45 GMT", now) == 45.0
    assert retry_after_s("Fri, 20 Nov 2026 07:59:00 GMT", now) == 0.0  # in the past
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


def test_delays_are_bounded_and_back_off_without_retry_after() -> None:
    policy = BulkPolicy(first_delay_s=1, min_delay_s=0.5, max_delay_s=60)
    assert policy.delay(0, 1) == 0.5
    assert policy.delay(3600, 1) == 60
    assert [policy.delay(None, n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@respx.mock
async def test_retry_after_as_an_http_date_is_honoured(tmp_path: Path) -> None:
    time = FakeTime()
    kick_off()
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    respx.get(JOB).mock(side_effect=[running("busy", when), done(manifest([]))])
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"]),
            sleep=time.sleep,
            clock=time.clock,
        )
    (waited,) = time.sleeps
    assert 28 < waited <= 30


@respx.mock
async def test_polling_without_retry_after_backs_off_exponentially(tmp_path: Path) -> None:
    time = FakeTime()
    kick_off()
    respx.get(JOB).mock(side_effect=[*(running("x", None) for _ in range(4)), done(manifest([]))])
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"]),
            sleep=time.sleep,
            clock=time.clock,
        )
    assert time.sleeps == [1.0, 2.0, 4.0, 8.0]


@respx.mock
async def test_429_on_polling_backs_off_and_keeps_the_job(tmp_path: Path) -> None:
    time = FakeTime()
    kick = kick_off()
    polls = respx.get(JOB).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(429),
            done(manifest([item("Patient", "Patient.ndjson", 1)])),
        ]
    )
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    delete = respx.delete(JOB).respond(202)
    seen: list[ExportProgress] = []
    async with client() as fhir:
        result = await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"]),
            progress=seen.append,
            sleep=time.sleep,
            clock=time.clock,
        )
    assert time.sleeps == [7.0, 2.0]  # the server's 7 s, then backoff (second wait)
    assert kick.call_count == 1
    assert polls.call_count == 3
    assert delete.call_count == 1, "DELETEd only when done, not on the 429"
    assert [p.stage for p in seen].count("throttled") == 2
    assert result.counts() == {"Patient": 1}


@respx.mock
async def test_transient_server_errors_on_polling_are_retried(tmp_path: Path) -> None:
    time = FakeTime()
    kick_off()
    respx.get(JOB).mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("reset"),
            httpx.Response(500, json=outcome("transient", "database busy")),
            running("50%"),
            done(manifest([])),
        ]
    )
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        result = await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"]),
            sleep=time.sleep,
            clock=time.clock,
        )
    assert result.files == ()
    assert len(time.sleeps) == 4


@respx.mock
async def test_a_failed_job_is_a_typed_error_naming_the_job(tmp_path: Path) -> None:
    kick_off()
    failure = outcome("processing", "An internal timeout has occurred")
    polls = respx.get(JOB).mock(side_effect=[running("1%"), httpx.Response(500, json=failure)])
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        with pytest.raises(BulkExportFailed) as caught:
            await export(
                fhir, tmp_path / "out", ExportRequest.of(["Patient"]), sleep=FakeTime().sleep
            )
    assert JOB in str(caught.value)
    assert "An internal timeout has occurred" in str(caught.value)
    assert caught.value.url == JOB
    assert caught.value.http_status == 500
    assert caught.value.outcome == failure
    assert polls.call_count == 2, "a non-transient issue code is not retried"


@respx.mock
async def test_a_job_failing_with_a_transient_code_is_retried_then_reported(
    tmp_path: Path,
) -> None:
    kick_off()
    polls = respx.get(JOB).respond(500, json=outcome("exception", "worker crashed"))
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        with pytest.raises(BulkExportFailed, match="worker crashed"):
            await export(
                fhir,
                tmp_path / "out",
                ExportRequest.of(["Patient"]),
                policy=BulkPolicy(transient_retries=2),
                sleep=FakeTime().sleep,
            )
    assert polls.call_count == 3


@respx.mock
async def test_a_job_gone_while_polling_is_a_failed_export(tmp_path: Path) -> None:
    kick_off()
    respx.get(JOB).respond(404, json=outcome("not-found", "No export job1"))
    respx.delete(JOB).respond(404)
    async with client() as fhir:
        with pytest.raises(BulkExportFailed, match="gone"):
            await export(
                fhir, tmp_path / "out", ExportRequest.of(["Patient"]), sleep=FakeTime().sleep
            )


@respx.mock
async def test_the_poll_limit_cancels_the_job_and_says_so(tmp_path: Path) -> None:
    time = FakeTime()
    kick_off()
    respx.get(JOB).mock(return_value=running("still collecting", "30"))
    delete = respx.delete(JOB).respond(202)
    out = tmp_path / "out"
    async with client() as fhir:
        with pytest.raises(BulkExportTimeout) as caught:
            await export(
                fhir,
                out,
                ExportRequest.of(["Patient"]),
                poll_limit_s=100,
                sleep=time.sleep,
                clock=time.clock,
            )
    message = str(caught.value)
    assert JOB in message
    assert "100s" in message
    assert "still collecting" in message
    assert delete.call_count == 1
    assert sum(time.sleeps) == 100, "never waits past the limit"
    assert list(out.iterdir()) == []


@respx.mock
async def test_a_cancelled_export_deletes_its_job(tmp_path: Path) -> None:
    kick_off()

    async def cancelled(seconds: float) -> None:
        raise asyncio.CancelledError

    respx.get(JOB).mock(return_value=running("x"))
    delete = respx.delete(JOB).respond(202)
    async with client() as fhir:
        with pytest.raises(asyncio.CancelledError):
            await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]), sleep=cancelled)
    assert delete.call_count == 1


# ---------------------------------------------------------------- kick-off
@respx.mock
async def test_kick_off_refused_is_a_typed_error_with_the_outcome(tmp_path: Path) -> None:
    respx.get(KICK_OFF).respond(400, json=outcome("not-supported", "Unsupported _type Foo"))
    async with client() as fhir:
        with pytest.raises(BulkExportFailed, match="Unsupported _type Foo"):
            await export(fhir, tmp_path / "out", ExportRequest.of(["Foo"]))


@respx.mock
async def test_kick_off_429_is_retried_with_its_retry_after(tmp_path: Path) -> None:
    time = FakeTime()
    respx.get(KICK_OFF).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "5"}),
            httpx.Response(202, headers={"Content-Location": JOB}),
        ]
    )
    respx.get(JOB).mock(return_value=done(manifest([])))
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]), sleep=time.sleep)
    assert time.sleeps == [5.0]


@respx.mock
async def test_a_status_url_on_another_host_is_refused(tmp_path: Path) -> None:
    respx.get(KICK_OFF).respond(202, headers={"Content-Location": "http://evil.test/status/1"})
    async with client() as fhir:
        with pytest.raises(FhirUnsafeLink, match=r"evil\.test"):
            await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]))


@pytest.mark.parametrize(
    ("level", "path"),
    [("patient", "Patient/$export"), ("g1", "Group/g1/$export"), ("Group/g1", "Group/g1/$export")],
)
@respx.mock
async def test_levels_map_to_their_endpoints(tmp_path: Path, level: str, path: str) -> None:
    kick = respx.get(f"{BASE}/{path}").respond(202, headers={"Content-Location": JOB})
    respx.get(JOB).mock(return_value=done(manifest([])))
    respx.delete(JOB).respond(202)
    async with client() as fhir:
        await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"], level=level))
    assert kick.call_count == 1


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    async with client() as fhir:
        with pytest.raises(ValueError, match="Group id"):
            await export(fhir, tmp_path / "a", ExportRequest.of(["Patient"], level="../metadata"))
        with pytest.raises(ValueError, match="not resource types"):
            await export(fhir, tmp_path / "b", ExportRequest.of(["Patient,Group"]))
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "Patient-1.ndjson").write_text("{}\n")
        with pytest.raises(ValueError, match="must be empty"):
            await export(fhir, tmp_path / "c", ExportRequest.of(["Patient"]))


# ---------------------------------------------------------------- manifest and downloads
@respx.mock
async def test_error_files_are_parsed_and_reported(tmp_path: Path) -> None:
    errors = [item("OperationOutcome", "errors.ndjson")]
    simple_job(manifest([item("Patient", "Patient.ndjson", 1)], errors))
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    two_issues = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "Observation/o9 unreadable"},
            {"severity": "warning", "code": "not-supported", "diagnostics": "ignored _elements"},
        ],
    }
    body = ndjson(outcome("exception", "Condition export failed"), two_issues) + b"not json\n"
    respx.get(f"{FILES}/job1/errors.ndjson").respond(200, content=body)
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export(fhir, out, ExportRequest.of(["Patient"]))
    assert [(i.severity, i.code, i.text) for i in result.issues] == [
        ("error", "exception", "Condition export failed"),
        ("error", "processing", "Observation/o9 unreadable"),
        ("warning", "not-supported", "ignored _elements"),
        ("error", "structure", "unreadable error line"),
    ]
    assert result.issues[1].source == f"{FILES}/job1/errors.ndjson:2"
    assert len(result.errors) == 3
    assert result.issue_count == 4
    assert [p.name for p in out.iterdir()] == ["Patient-1.ndjson"], "error files are not data"


@respx.mock
async def test_a_count_short_of_the_manifest_is_an_error_issue(tmp_path: Path) -> None:
    simple_job(manifest([item("Patient", "Patient.ndjson", 3)]))
    # two resources, a blank line, and a last line without its newline
    body = ndjson(patient(1)) + b"\n" + json.dumps(patient(2)).encode()
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=body)
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export(fhir, out, ExportRequest.of(["Patient"]))
    assert result.counts() == {"Patient": 2}
    (issue,) = result.issues
    assert (issue.severity, issue.code) == ("error", "incomplete")
    assert "manifest count 3" in issue.text
    assert (out / "Patient-1.ndjson").read_bytes().endswith(b"}\n"), "last line completed"


class CutShort(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield ndjson(patient(1)) + b'{"resourceType":"Pat'
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@respx.mock
async def test_a_download_cut_short_is_fetched_again_from_the_start(tmp_path: Path) -> None:
    simple_job(manifest([item("Patient", "Patient.ndjson", 2)]))
    whole = ndjson(patient(1), patient(2))
    route = respx.get(f"{FILES}/job1/Patient.ndjson").mock(
        side_effect=[
            httpx.Response(200, stream=CutShort()),
            httpx.Response(503),
            httpx.Response(200, content=whole),
        ]
    )
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export(fhir, out, ExportRequest.of(["Patient"]), sleep=FakeTime().sleep)
    assert route.call_count == 3
    assert (out / "Patient-1.ndjson").read_bytes() == whole
    assert result.issues == ()
    assert sorted(p.name for p in out.iterdir()) == ["Patient-1.ndjson"], "no .part left"


@respx.mock
async def test_an_expired_file_kicks_the_export_off_once_more(tmp_path: Path) -> None:
    kick = respx.get(KICK_OFF).mock(
        side_effect=[
            httpx.Response(202, headers={"Content-Location": JOB}),
            httpx.Response(202, headers={"Content-Location": JOB2}),
        ]
    )
    first = manifest([item("Patient", "Patient.ndjson"), item("Condition", "Condition.ndjson")])
    respx.get(JOB).mock(return_value=done(first))
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    respx.get(f"{FILES}/job1/Condition.ndjson").respond(410)
    second = manifest([item("Patient", "Patient.ndjson", 2, job="job2")])
    respx.get(JOB2).mock(return_value=done(second))
    respx.get(f"{FILES}/job2/Patient.ndjson").respond(200, content=ndjson(patient(1), patient(2)))
    delete1 = respx.delete(JOB).respond(202)
    delete2 = respx.delete(JOB2).respond(202)
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export(fhir, out, ExportRequest.of(["Patient", "Condition"]))
    assert kick.call_count == 2
    assert result.kick_offs == 2
    assert result.job == JOB2
    assert [p.name for p in out.iterdir()] == ["Patient-1.ndjson"], "nothing of job1 is left"
    assert result.counts() == {"Patient": 2}
    assert delete1.call_count == 1
    assert delete2.call_count == 1


@respx.mock
async def test_a_file_gone_in_the_second_export_too_fails_naming_it(tmp_path: Path) -> None:
    respx.get(KICK_OFF).mock(
        side_effect=[
            httpx.Response(202, headers={"Content-Location": JOB}),
            httpx.Response(202, headers={"Content-Location": JOB2}),
        ]
    )
    respx.get(JOB).mock(return_value=done(manifest([item("Patient", "P.ndjson")])))
    respx.get(JOB2).mock(return_value=done(manifest([item("Patient", "P.ndjson", job="job2")])))
    respx.get(f"{FILES}/job1/P.ndjson").respond(404)
    respx.get(f"{FILES}/job2/P.ndjson").respond(410)
    respx.delete(JOB).respond(202)
    respx.delete(JOB2).respond(202)
    out = tmp_path / "out"
    async with client() as fhir:
        with pytest.raises(BulkFileGone) as caught:
            await export(fhir, out, ExportRequest.of(["Patient"]))
    assert isinstance(caught.value, FhirNotFound)
    assert f"{FILES}/job2/P.ndjson" in str(caught.value)
    assert "(Patient)" in str(caught.value)
    assert "2030-01-01" in str(caught.value), "says when the server said the files expire"
    assert list(out.iterdir()) == []


@respx.mock
async def test_a_download_on_another_host_is_refused(tmp_path: Path) -> None:
    # files.elsewhere.test is not mocked: a request there would fail the test (respx)
    _, delete = simple_job(
        manifest([{"type": "Patient", "url": "https://files.elsewhere.test/p.ndjson"}])
    )
    async with client(auth=StaticBearer("secret")) as fhir:
        with pytest.raises(FhirUnsafeLink, match=r"files\.elsewhere\.test"):
            await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]))
    assert delete.call_count == 1


@respx.mock
async def test_allow_hosts_admits_a_separate_file_server(tmp_path: Path) -> None:
    simple_job(manifest([{"type": "Patient", "url": "https://files.elsewhere.test/p.ndjson"}]))
    respx.get("https://files.elsewhere.test/p.ndjson").respond(200, content=ndjson(patient(1)))
    async with client() as fhir:
        result = await export(
            fhir,
            tmp_path / "out",
            ExportRequest.of(["Patient"]),
            allow_hosts=frozenset({"files.elsewhere.test"}),
        )
    assert result.counts() == {"Patient": 1}


@pytest.mark.parametrize("requires", [True, False])
@respx.mock
async def test_downloads_carry_the_token_only_when_the_manifest_requires_it(
    tmp_path: Path, requires: bool
) -> None:
    kick_off()
    polls = respx.get(JOB).mock(
        return_value=done(manifest([item("Patient", "Patient.ndjson")], requires=requires))
    )
    download = respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    respx.delete(JOB).respond(202)
    async with client(auth=StaticBearer("t0k3n")) as fhir:
        await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]))
    assert polls.calls.last.request.headers["Authorization"] == "Bearer t0k3n"
    assert polls.calls.last.request.headers["Accept"] == "application/json"
    headers = download.calls.last.request.headers
    assert headers["Accept"] == "application/fhir+ndjson"
    if requires:
        assert headers["Authorization"] == "Bearer t0k3n"
    else:
        assert "Authorization" not in headers


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 64])
def test_line_counter_counts_non_blank_lines_however_the_stream_is_cut(cut: int) -> None:
    data = b'{"a":1}\n\n  \n{"b":2}\n{"c":3}'
    counter = _LineCounter()
    for start in range(0, len(data), cut):
        counter.feed(data[start : start + cut])
    assert counter.unterminated
    counter.close()
    assert counter.lines == 3


# ---------------------------------------------------------------- fallback
def capability(system_ops: list[str], patient_ops: list[str] | None = None) -> Resource:
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "operation": [{"name": n} for n in system_ops],
                "resource": [
                    {"type": "Patient", "operation": [{"name": n} for n in patient_ops or []]}
                ],
            }
        ],
    }


def search_routes() -> dict[str, respx.Route]:
    return {
        "Patient": respx.get(f"{BASE}/Patient").respond(json=searchset([patient(1), patient(2)])),
        "Observation": respx.get(f"{BASE}/Observation", params={"code": HGB}).respond(
            json=searchset([observation(1), observation(2, "Patient/p2")])
        ),
        "Condition": respx.get(f"{BASE}/Condition").respond(json=searchset([])),
    }


@respx.mock
async def test_a_server_without_export_is_read_by_search(tmp_path: Path) -> None:
    # $export is not mocked: a kick-off would fail the test (respx)
    respx.get(f"{BASE}/metadata").respond(json=capability(["validate"]))
    routes = search_routes()
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export_or_search(fhir, out, PLAN)
    assert result.method == "search"
    assert result.counts() == {"Patient": 2, "Observation": 2}
    assert sorted(p.name for p in out.iterdir()) == ["Observation-1.ndjson", "Patient-1.ndjson"]
    assert routes["Observation"].calls.last.request.url.params["code"] == HGB
    assert routes["Patient"].calls.last.request.headers["Prefer"] == "handling=strict"
    lines = (out / "Observation-1.ndjson").read_bytes().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["o1", "o2"]


@pytest.mark.parametrize("status", [404, 405, 501])
@respx.mock
async def test_a_kick_off_refused_as_unknown_falls_back_when_capability_is_unreadable(
    tmp_path: Path, status: int
) -> None:
    respx.get(f"{BASE}/metadata").respond(500)
    respx.get(KICK_OFF).respond(status)
    search_routes()
    async with client() as fhir:
        result = await export_or_search(fhir, tmp_path / "out", PLAN, sleep=FakeTime().sleep)
    assert result.method == "search"
    assert result.counts()["Patient"] == 2


@respx.mock
async def test_a_404_is_raised_when_the_server_declares_export(tmp_path: Path) -> None:
    respx.get(f"{BASE}/metadata").respond(
        json={
            "resourceType": "CapabilityStatement",
            "rest": [{"resource": [{"type": "Group", "operation": [{"name": "export"}]}]}],
        }
    )
    respx.get(f"{BASE}/Group/nope/$export").respond(
        404, json=outcome("not-found", "Group/nope not found")
    )
    async with client() as fhir:
        with pytest.raises(BulkExportUnsupported, match="Group/nope not found"):
            await export_or_search(fhir, tmp_path / "out", PLAN, level="nope")


@respx.mock
async def test_a_patient_level_export_reads_types_it_left_out_by_search(tmp_path: Path) -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability([], ["export"]))
    kick = respx.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": JOB})
    respx.get(JOB).mock(return_value=done(manifest([item("Patient", "Patient.ndjson", 1)])))
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    respx.delete(JOB).respond(202)
    subject = {
        "resourceType": "ResearchSubject",
        "id": "rs1",
        "individual": {"reference": "Patient/p1"},
    }
    respx.get(f"{BASE}/ResearchSubject").respond(json=searchset([subject]))
    plan = FetchPlan(observation_codes=(), other_types=("ResearchSubject",))
    out = tmp_path / "out"
    async with client() as fhir:
        result = await export_or_search(fhir, out, plan, level="patient")
    assert kick.calls.last.request.url.params["_type"] == "Patient,ResearchSubject"
    assert result.method == "bulk-export"
    assert result.searched == ("ResearchSubject",)
    assert result.counts() == {"Patient": 1, "ResearchSubject": 1}
    assert sorted(p.name for p in out.iterdir()) == ["Patient-1.ndjson", "ResearchSubject-1.ndjson"]


@respx.mock
async def test_a_group_search_keeps_members_and_reads_each_observation_once(
    tmp_path: Path,
) -> None:
    respx.get(f"{BASE}/Group/g1").respond(
        json={
            "resourceType": "Group",
            "id": "g1",
            "member": [{"entity": {"reference": "Patient/p1"}}],
        }
    )
    respx.get(f"{BASE}/Patient").respond(json=searchset([patient(1), patient(2)]))
    # one Observation coded twice: once per code chunk
    both = [observation(1), observation(2, "Patient/p2")]
    respx.get(f"{BASE}/Observation").respond(json=searchset(both))
    plan = FetchPlan(
        observation_codes=tuple(f"http://loinc.org|{i}-0" for i in range(CODES_PER_QUERY + 1))
    )
    assert len(plan.observation_queries()) == 2
    async with client() as fhir:
        result = await search_to_ndjson(
            fhir, tmp_path / "out", plan, level="Group/g1", types=["Patient", "Observation"]
        )
    assert result.counts() == {"Patient": 1, "Observation": 1}


@respx.mock
async def test_a_group_export_searches_every_medication_its_members_may_name(
    tmp_path: Path,
) -> None:
    """Medication names no patient and is in no Patient compartment: after a Group export
    it is read by search, whole (a member's order may name any of them)."""
    respx.get(f"{BASE}/metadata").respond(
        json={
            "resourceType": "CapabilityStatement",
            "rest": [{"resource": [{"type": "Group", "operation": [{"name": "export"}]}]}],
        }
    )
    respx.get(f"{BASE}/Group/g1").respond(
        json={
            "resourceType": "Group",
            "id": "g1",
            "member": [{"entity": {"reference": "Patient/p1"}}],
        }
    )
    kick = respx.get(f"{BASE}/Group/g1/$export").respond(202, headers={"Content-Location": JOB})
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/med1"},
    }
    files = manifest(
        [item("Patient", "Patient.ndjson", 1), item("MedicationRequest", "MR.ndjson", 1)]
    )
    respx.get(JOB).mock(return_value=done(files))
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    respx.get(f"{FILES}/job1/MR.ndjson").respond(200, content=ndjson(order))
    respx.delete(JOB).respond(202)
    medicines = [{"resourceType": "Medication", "id": f"med{i}"} for i in (1, 2)]
    respx.get(f"{BASE}/Medication").respond(json=searchset(medicines))
    plan = FetchPlan(observation_codes=(), other_types=("MedicationRequest",))
    async with client() as fhir:
        result = await export_or_search(fhir, tmp_path / "out", plan, level="g1")
    assert kick.calls.last.request.url.params["_type"] == "Patient,MedicationRequest,Medication"
    assert result.searched == ("Medication",)
    assert result.counts() == {"Patient": 1, "MedicationRequest": 1, "Medication": 2}


def test_plan_types_add_medication_when_medication_records_are_planned() -> None:
    plan = FetchPlan(observation_codes=(), other_types=("Condition", "MedicationDispense"))
    assert plan.shared_types == ("Medication",)
    assert plan_types(plan) == ["Patient", "Condition", "MedicationDispense", "Medication"]
    assert FetchPlan(observation_codes=()).shared_types == SHARED_TYPES


def test_plan_types_put_patient_first_and_skip_observation_without_codes() -> None:
    assert plan_types(PLAN) == ["Patient", "Observation", "Condition"]
    assert plan_types(FetchPlan(observation_codes=(), other_types=("Condition",))) == [
        "Patient",
        "Condition",
    ]


# ---------------------------------------------------------------- incremental: deletions
def deletion_bundle(*references: str) -> Resource:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": reference}} for reference in references],
    }


@respx.mock
async def test_the_manifest_deleted_files_are_read_into_references(tmp_path: Path) -> None:
    body = manifest([item("Patient", "Patient.ndjson", 1)])
    body["deleted"] = [item("Bundle", "del-1.ndjson"), item("Bundle", "del-2.ndjson")]
    simple_job(body)
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    respx.get(f"{FILES}/job1/del-1.ndjson").respond(
        200,
        content=ndjson(
            deletion_bundle("Condition/c1", "Observation/o2"),
            deletion_bundle("Observation/o3/_history/4"),
        ),
    )
    respx.get(f"{FILES}/job1/del-2.ndjson").respond(200, content=ndjson(deletion_bundle()))
    since = datetime(2026, 11, 1, tzinfo=UTC)
    async with client() as fhir:
        result = await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"], since=since))
    assert sorted(result.deleted) == ["Condition/c1", "Observation/o2", "Observation/o3"]
    assert result.deleted_unreadable == 0
    assert result.issues == ()
    # the deletion lists are not data: the out directory holds the Patient file only
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Patient-1.ndjson"]


@respx.mock
async def test_an_unreadable_deletion_line_is_counted_and_reported(tmp_path: Path) -> None:
    body = manifest([item("Patient", "Patient.ndjson", 1)])
    body["deleted"] = [item("Bundle", "del.ndjson")]
    simple_job(body)
    respx.get(f"{FILES}/job1/Patient.ndjson").respond(200, content=ndjson(patient(1)))
    put = {"resourceType": "Bundle", "entry": [{"request": {"method": "PUT", "url": "X/1"}}]}
    respx.get(f"{FILES}/job1/del.ndjson").respond(
        200,
        content=b'{"resourceType": "Bundle", "entry": ['
        + b"\n"  # cut short
        + ndjson(deletion_bundle("Condition/c1"), put),
    )
    async with client() as fhir:
        result = await export(fhir, tmp_path / "out", ExportRequest.of(["Patient"]))
    assert result.deleted == ("Condition/c1",)
    assert result.deleted_unreadable == 2  # the cut line and the PUT
    (issue,) = result.errors
    assert "deletions unknown" in issue.text


@respx.mock
async def test_an_incremental_search_reads_every_changed_observation(tmp_path: Path) -> None:
    """With `since`, Observations are not narrowed to the plan's codes: one recoded away
    from them must reach the caller, who drops its previous version."""
    respx.get(f"{BASE}/metadata").respond(200, json={"resourceType": "CapabilityStatement"})
    observations = respx.get(f"{BASE}/Observation").respond(200, json=searchset([observation(1)]))
    respx.get(f"{BASE}/Patient").respond(200, json=searchset([]))
    respx.get(f"{BASE}/Condition").respond(200, json=searchset([]))
    since = datetime(2026, 11, 1, tzinfo=UTC)
    async with client() as fhir:
        result = await export_or_search(fhir, tmp_path / "out", PLAN, since=since)
    assert result.method == "search"
    assert observations.call_count == 1
    params = observations.calls.last.request.url.params
    assert "code" not in params
    assert params["_lastUpdated"] == "ge2026-11-01T00:00:00.000Z"
