"""fetch_patient in one FHIR batch: when it is used, and that each entry is judged as the
search alone would be. The server is a respx fake holding one patient's records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from service import synthetic as syn
from service.errors import FhirFatalError, FhirNotFound, FhirTemporaryError
from service.fetching import fetch_patient
from service.fhir.client import FhirClient, RetryPolicy
from service.fhir.plan import FetchPlan
from service.terminology import Terminology
from tests import factories as f
from tests.fhir_tokens import token_matches

BASE = "http://fhir.test/fhir"
HEMOGLOBIN = "http://loinc.org|718-7"
BEARER = "user-access-t0k"  # a SMART launch's token, sent instead of the client's own auth
PLAN = FetchPlan(observation_codes=(HEMOGLOBIN,), other_types=("Condition", "ResearchSubject"))
Resource = dict[str, Any]
Entry = dict[str, Any]
REFUSED = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "patient"}],
}
# What sekmet-fhir 0.1.1 answers in a batch entry instead of REFUSED: the parameter ignored.
IGNORED = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": "ignored"}],
}


def searchset(resources: list[Resource], next_url: str | None = None) -> Resource:
    bundle: Resource = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def ok(resource: Resource) -> Entry:
    return {"response": {"status": "200 OK"}, "resource": resource}


def failed(status: str, outcome: Resource | None = None) -> Entry:
    response: Resource = {"status": status}
    if outcome is not None:
        response["outcome"] = outcome
    return {"response": response}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class FakeServer:
    """One patient's records, searched by patient (and Observation code), by GET and in
    batches. Faults: `entries` replaces the batch entry of a resource type, `pages` answers a
    GET of that path and query, `posts` answers the next batch POSTs (in turn)."""

    def __init__(self, resources: list[Resource], router: respx.MockRouter) -> None:
        self.resources = resources
        self.router = router
        self.batch = True
        self.entries: dict[str, Entry] = {}
        self.pages: dict[str, httpx.Response] = {}
        self.posts: list[httpx.Response | Exception] = []
        self.batches: list[list[str]] = []  # the entry URLs of every batch received

    def requests(self, method: str) -> list[httpx.Request]:
        return [call.request for call in self.router.calls if call.request.method == method]

    def gets(self) -> list[str]:
        return [str(r.url.raw_path, "ascii") for r in self.requests("GET")]

    def answer(self, url: httpx.URL) -> Entry:
        kind, _, ident = url.path.removeprefix("/fhir/").partition("/")
        found = [r for r in self.resources if r["resourceType"] == kind]
        if ident:
            match = [r for r in found if r["id"] == ident]
            return ok(match[0]) if match else failed("404 Not Found")
        if "code" in url.params:
            found = [r for r in found if token_matches(r["code"]["coding"], url.params["code"])]
        return ok(searchset(found))

    def get(self, request: httpx.Request) -> httpx.Response:
        page = self.pages.get(str(request.url.raw_path, "ascii"))
        if page is not None:
            return page
        if request.url.path == "/fhir/metadata":
            interactions = [{"code": "transaction"}] + ([{"code": "batch"}] if self.batch else [])
            statement = {
                "resourceType": "CapabilityStatement",
                "rest": [{"mode": "server", "interaction": interactions}],
            }
            return httpx.Response(200, json=statement)
        entry = self.answer(request.url)
        status = int(entry["response"]["status"].split()[0])
        return httpx.Response(
            status, json=entry.get("resource") or entry["response"].get("outcome")
        )

    def post(self, request: httpx.Request) -> httpx.Response:
        if self.posts:
            fault = self.posts.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        bundle = orjson.loads(request.content)
        assert bundle["type"] == "batch"
        urls = [e["request"]["url"] for e in bundle["entry"]]
        assert all(e["request"]["method"] == "GET" for e in bundle["entry"])
        self.batches.append(urls)
        answers = []
        for url in urls:
            kind = url.split("?")[0].split("/")[0]
            answers.append(self.entries.get(kind) or self.answer(httpx.URL(f"{BASE}/{url}")))
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "batch-response", "entry": answers}
        )


RECORDS = [
    f.patient(),
    f.obs("718-7", 12.5, "g/dL"),
    f.obs("2160-0", 1.0, "mg/dL"),  # a code the plan does not ask for
    f.condition("55464009"),
    f.study("NCT00000001", status="off-study", start="2020-01-01", end="2021-01-01"),
]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeServer(list(RECORDS), router)
        router.get(host="fhir.test").mock(side_effect=fake.get)
        router.post(BASE).mock(side_effect=fake.post)
        yield fake


def client(sleep: Sleeps | None = None) -> FhirClient:
    return FhirClient(BASE, sleep=sleep or Sleeps(), retry=RetryPolicy(attempts=3))


async def test_one_batch_when_the_server_declares_it(
    server: FakeServer, terms: Terminology
) -> None:
    async with client() as fhir:
        first = await fetch_patient(fhir, "p1", PLAN, terms, token=BEARER)
        second = await fetch_patient(fhir, "p1", PLAN, terms, token=BEARER)
    for fetched in (first, second):
        assert fetched.problems == []
        assert fetched.resources == 4  # Patient, hemoglobin, condition, study
        assert len(fetched.facts.labs_for("hemoglobin")) == 1
    gets = [r.url.path for r in server.requests("GET")]
    assert gets == ["/fhir/metadata"]  # read once per client; nothing else one by one
    assert [url.split("?")[0] for url in server.batches[0]] == [
        "Patient/p1",
        "Observation",
        "Condition",
        "ResearchSubject",
    ]
    assert "_count=200" in server.batches[0][1]
    for post in server.requests("POST"):
        assert post.headers["Authorization"] == f"Bearer {BEARER}"
        assert post.headers["Prefer"] == "handling=strict"
        assert post.headers["Content-Type"] == "application/fhir+json"


async def test_no_batch_when_the_server_does_not_declare_it(
    server: FakeServer, terms: Terminology
) -> None:
    server.batch = False
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms, token=BEARER)
    assert fetched.problems == []
    assert fetched.resources == 4
    assert server.requests("POST") == []
    searched = sorted(r.url.path for r in server.requests("GET"))
    assert searched == [
        "/fhir/Condition",
        "/fhir/Observation",
        "/fhir/Patient/p1",
        "/fhir/ResearchSubject",
        "/fhir/metadata",
    ]
    assert all(r.headers["Authorization"] == f"Bearer {BEARER}" for r in server.requests("GET")[1:])


async def test_a_failed_entry_makes_only_its_type_a_problem(
    server: FakeServer, terms: Terminology
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "too-costly", "diagnostics": "too many codes"}],
    }
    server.entries["Observation"] = failed("400 Bad Request", outcome)
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    (problem,) = fetched.problems
    assert problem.resource_type == "Observation"
    assert "too many codes" in problem.message
    assert problem.concepts is None  # concerns every lab criterion: they become unknown
    assert fetched.resources == 3  # the others still arrived
    assert [r.url.path for r in server.requests("GET")] == ["/fhir/metadata"]


async def test_an_entrys_searchset_is_paged_through_its_next_links(
    server: FakeServer, terms: Terminology
) -> None:
    more = f.condition("38341003")
    server.entries["Condition"] = ok(searchset([RECORDS[3]], "Condition?page=2"))
    server.pages["/fhir/Condition?page=2"] = httpx.Response(200, json=searchset([more]))
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms, token=BEARER)
    assert fetched.problems == []
    assert fetched.resources == 5
    assert server.gets() == ["/fhir/metadata", "/fhir/Condition?page=2"]
    assert server.requests("GET")[1].headers["Authorization"] == f"Bearer {BEARER}"


@pytest.mark.parametrize(
    ("next_url", "message"),
    [
        ("http://elsewhere.example/fhir/Condition?page=2", "another host"),
        ("Condition?_count=200&patient=Patient%2Fp1", "loops"),
    ],
)
async def test_an_entrys_next_links_are_checked_like_any_others(
    server: FakeServer, terms: Terminology, next_url: str, message: str
) -> None:
    server.entries["Condition"] = ok(searchset([RECORDS[3]], next_url))
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    (problem,) = fetched.problems
    assert problem.resource_type == "Condition"
    assert message in problem.message


@pytest.mark.parametrize(
    "entry",
    [failed("400 Bad Request", REFUSED), ok({**searchset([]), "entry": [{"resource": IGNORED}]})],
    ids=["refused", "ignored-in-batch"],
)
async def test_a_refused_patient_parameter_falls_back_to_one_cached_scan(
    server: FakeServer, terms: Terminology, entry: Entry
) -> None:
    other = syn.make_research_subject(
        "rs-other", "Patient/p2", study="NCT2", status="on-study", start="2024-01-01", end=None
    )
    server.resources.append(other)
    server.entries["ResearchSubject"] = entry
    async with client() as fhir:
        first = await fetch_patient(fhir, "p1", PLAN, terms)
        second = await fetch_patient(fhir, "p1", PLAN, terms)
    for fetched in (first, second):
        assert fetched.problems == []
        assert fetched.resources == 4  # only p1's study, not p2's
    assert server.gets() == ["/fhir/metadata", "/fhir/ResearchSubject?_count=200"]  # cached
    assert not any(url.startswith("ResearchSubject") for url in server.batches[1])


async def test_the_batch_post_is_retried_on_429(server: FakeServer, terms: Terminology) -> None:
    sleeps = Sleeps()
    server.posts = [httpx.Response(429, headers={"Retry-After": "2"})]
    async with client(sleeps) as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms, token=BEARER)
    assert fetched.resources == 4
    assert sleeps.calls == [2.0]
    posts = server.requests("POST")
    assert len(posts) == 2
    assert all(post.headers["Authorization"] == f"Bearer {BEARER}" for post in posts)


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_refused_batch_falls_back_to_searches_one_by_one(
    server: FakeServer, terms: Terminology, status: int
) -> None:
    server.posts = [httpx.Response(status)]
    async with client() as fhir:
        first = await fetch_patient(fhir, "p1", PLAN, terms)
        second = await fetch_patient(fhir, "p1", PLAN, terms)
    assert first.resources == second.resources == 4
    assert first.problems == second.problems == []
    assert len(server.requests("POST")) == 1  # remembered: no batch from then on
    assert len(server.requests("GET")) == 1 + 2 * 4  # metadata, then 4 requests per patient


@pytest.mark.parametrize(
    ("status", "token", "remembered"),
    [(403, None, True), (403, BEARER, False), (401, None, False)],
    ids=["403-own-credentials", "403-user-token", "401"],
)
async def test_a_batch_refused_to_the_credentials_falls_back_to_searches_one_by_one(
    server: FakeServer, terms: Terminology, status: int, token: str | None, remembered: bool
) -> None:
    # sekmet-fhir 0.1.1 takes a batch POST for a create: a read-only token gets 403
    server.posts = [httpx.Response(status), httpx.Response(status)]
    async with client() as fhir:
        first = await fetch_patient(fhir, "p1", PLAN, terms, token=token)
        second = await fetch_patient(fhir, "p1", PLAN, terms, token=token)
    assert first.resources == second.resources == 4
    assert len(server.requests("POST")) == (1 if remembered else 2)
    assert len(server.requests("GET")) == 1 + 2 * 4


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (httpx.Response(500), FhirFatalError),
        (httpx.Response(503), FhirTemporaryError),
        (httpx.ConnectError("down"), FhirTemporaryError),
    ],
    ids=["500", "503-after-retries", "unreachable"],
)
async def test_a_failed_batch_fails_the_fetch(
    server: FakeServer,
    terms: Terminology,
    fault: httpx.Response | Exception,
    error: type[Exception],
) -> None:
    server.posts = [fault] * 3
    async with client() as fhir:
        with pytest.raises(error):
            await fetch_patient(fhir, "p1", PLAN, terms)


async def test_an_unknown_patient_is_not_found(server: FakeServer, terms: Terminology) -> None:
    server.resources = [r for r in server.resources if r["resourceType"] != "Patient"]
    async with client() as fhir:
        with pytest.raises(FhirNotFound, match="Patient/p1"):
            await fetch_patient(fhir, "p1", PLAN, terms)
    assert len(server.requests("POST")) == 1


async def test_a_throttled_entry_is_asked_again_alone(
    server: FakeServer, terms: Terminology
) -> None:
    server.entries["Condition"] = failed("503 Service Unavailable")
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
    assert fetched.problems == []
    assert fetched.resources == 4
    assert [r.url.path for r in server.requests("GET")] == ["/fhir/metadata", "/fhir/Condition"]


async def test_an_unreadable_capability_statement_means_no_batch(
    server: FakeServer, terms: Terminology
) -> None:
    server.pages["/fhir/metadata"] = httpx.Response(404)
    async with client() as fhir:
        fetched = await fetch_patient(fhir, "p1", PLAN, terms)
        await fetch_patient(fhir, "p1", PLAN, terms)
    assert fetched.resources == 4
    assert server.requests("POST") == []
    assert [r.url.path for r in server.requests("GET")].count("/fhir/metadata") == 1
