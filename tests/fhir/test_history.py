"""Deletions from type-level history: what an incremental sweep learns besides the export."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from service.errors import FhirFatalError, FhirNotFound
from service.fhir.client import FhirClient, RetryPolicy
from service.fhir.history import HISTORY_PAGE_SIZE, changes_since, deleted_during, history_types

BASE = "http://fhir.test/fhir"
SINCE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
INSTANT = "2026-11-20T08:00:00.000Z"
Entry = dict[str, Any]


def capability(*types: str, interactions: tuple[str, ...] = ("history-type",)) -> Entry:
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "resource": [
                    {"type": t, "interaction": [{"code": c} for c in interactions]} for t in types
                ]
            }
        ],
    }


def entry(method: str, reference: str, modified: str) -> Entry:
    kind, ident = reference.split("/")
    found: Entry = {
        "fullUrl": f"{BASE}/{reference}",
        "request": {"method": method, "url": reference if method != "POST" else kind},
        "response": {"lastModified": modified},
    }
    if method != "DELETE":
        found["resource"] = {"resourceType": kind, "id": ident}
    return found


def history(entries: list[Entry], next_url: str | None = None) -> Entry:
    bundle: Entry = {"resourceType": "Bundle", "type": "history", "entry": entries}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def test_history_types_are_those_the_server_declares() -> None:
    statement = capability("Condition", "Observation")
    statement["rest"][0]["resource"].append({"type": "Patient", "interaction": [{"code": "read"}]})
    assert history_types(statement, ["Patient", "Observation", "Condition", "Procedure"]) == [
        "Observation",
        "Condition",
    ]


async def exported() -> str:
    return "export"


def routes(kind: str, pages: dict[str, Entry]) -> respx.Route:
    """`[kind]/_history`: the first page for each `_since` in `pages`, by that value."""

    def answer(request: httpx.Request) -> httpx.Response:
        since = request.url.params.get("_since")
        assert request.url.params.get("_count") == str(HISTORY_PAGE_SIZE)
        assert since in pages, f"unexpected _since {since}"
        return httpx.Response(200, json=pages[since])

    return respx.get(f"{BASE}/{kind}/_history").mock(side_effect=answer)


@respx.mock
async def test_the_newest_change_decides_and_older_pages_are_not_read() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    # sekmet-fhir's next link drops _since: page 2 would list the whole history
    page2 = f"{BASE}/Condition/_history?_count=1000&_offset=4"
    top = "2026-11-21T10:00:00.000Z"
    second = respx.get(page2).respond(json=history([]))
    first = routes(
        "Condition",
        {
            INSTANT: history(
                [
                    entry("DELETE", "Condition/c1", top),
                    entry("PUT", "Condition/c2", "2026-11-21T09:00:00.000Z"),  # re-created...
                    entry("DELETE", "Condition/c2", "2026-11-21T08:00:00.000Z"),  # ...after this
                    entry("DELETE", "Condition/c3", "2026-11-19T08:00:00.000Z"),  # before since
                ],
                next_url=page2,
            ),
            top: history([entry("DELETE", "Condition/c1", top)]),  # once the export is done
        },
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        done, found = await deleted_during(client, ["Patient", "Condition"], SINCE, exported())
    assert done == "export"
    assert found.references == frozenset({"Condition/c1"})
    assert (found.checked, found.unchecked) == (("Condition",), ("Patient",))
    assert [c.request.url.params["_since"] for c in first.calls] == [INSTANT, top]
    assert second.call_count == 0, "stopped at the first entry older than since"


@respx.mock
async def test_history_pages_are_followed_while_entries_are_recent() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Observation"))
    page2 = f"{BASE}/Observation/_history?page=2"
    top = "2026-11-22T00:00:00.000Z"
    respx.get(page2).respond(  # before the first page's route, which matches any query
        json=history([entry("DELETE", "Observation/o2", "2026-11-21T00:00:00+08:00")])
    )
    routes(
        "Observation",
        {
            INSTANT: history([entry("DELETE", "Observation/o1", top)], page2),
            top: history([entry("DELETE", "Observation/o1", top)]),
        },
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        _, found = await deleted_during(client, ["Observation"], SINCE, exported())
    assert found.references == frozenset({"Observation/o1", "Observation/o2"})


async def endless(cancelled: asyncio.Event) -> str:
    """An export that runs until cancelled (and then says so)."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return "never"


class ChangingServer:
    """A type's history that lists `before` until the export is done and `after` (newer
    entries) from then on; the export ends once the first history page was answered."""

    def __init__(self, kind: str, before: list[Entry], after: list[Entry]) -> None:
        self.before, self.after = before, after
        self.asked: list[str] = []  # the `_since` of each request
        self.exported = False
        self.answered = asyncio.Event()
        respx.get(f"{BASE}/{kind}/_history").mock(side_effect=self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        since = request.url.params["_since"]
        self.asked.append(since)
        listed = [*self.after, *self.before] if self.exported else self.before
        moment = datetime.fromisoformat(since)
        kept = [
            e for e in listed if datetime.fromisoformat(e["response"]["lastModified"]) >= moment
        ]
        self.answered.set()
        return httpx.Response(200, json=history(kept))

    async def export(self) -> str:
        await self.answered.wait()
        self.exported = True  # the server changed while the export ran
        return "export"


@respx.mock
async def test_a_deletion_while_the_export_runs_is_found_by_the_second_reading() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    top = "2026-11-21T10:00:00.000Z"
    server = ChangingServer(
        "Condition",
        before=[entry("PUT", "Condition/c1", top)],
        after=[entry("DELETE", "Condition/c2", "2026-11-21T10:00:05.000Z")],
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        _, found = await deleted_during(client, ["Condition"], SINCE, server.export())
    assert found.references == frozenset({"Condition/c2"})
    # read again from the newest change the first reading saw, not from since
    assert server.asked == [INSTANT, top]


@respx.mock
async def test_a_resource_created_again_while_the_export_runs_is_not_deleted() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    server = ChangingServer(
        "Condition",
        before=[entry("DELETE", "Condition/c1", "2026-11-21T10:00:00.000Z")],
        after=[entry("PUT", "Condition/c1", "2026-11-21T10:00:05.000Z")],
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        _, found = await deleted_during(client, ["Condition"], SINCE, server.export())
    assert found.references == frozenset()
    assert len(server.asked) == 2


@respx.mock
async def test_an_empty_first_reading_is_read_again_from_since() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    server = ChangingServer(
        "Condition",
        before=[],
        after=[entry("DELETE", "Condition/c9", "2026-11-21T10:00:05.000Z")],
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        _, found = await deleted_during(client, ["Condition"], SINCE, server.export())
    assert found.references == frozenset({"Condition/c9"})
    assert server.asked == [INSTANT, INSTANT]


@respx.mock
async def test_a_failed_export_stops_the_history_and_is_raised_as_it_is() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_page(request: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return httpx.Response(200, json=history([]))

    respx.get(f"{BASE}/Condition/_history").mock(side_effect=slow_page)

    async def failing() -> str:
        await started.wait()
        raise FhirFatalError("refused", http_status=400)

    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(FhirFatalError, match="refused"):
            await deleted_during(client, ["Condition"], SINCE, failing())
    assert cancelled.is_set()


@respx.mock
async def test_a_failed_history_stops_the_export() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    respx.get(f"{BASE}/Condition/_history").respond(404)
    cancelled = asyncio.Event()

    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(FhirNotFound):
            await deleted_during(client, ["Condition"], SINCE, endless(cancelled))
    assert cancelled.is_set()


@respx.mock
async def test_an_unreadable_capability_statement_stops_the_export() -> None:
    respx.get(f"{BASE}/metadata").respond(404)
    cancelled = asyncio.Event()

    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(FhirNotFound):
            await deleted_during(client, ["Condition"], SINCE, endless(cancelled))
    assert cancelled.is_set()


@respx.mock
async def test_changes_since_sums_each_types_history_total() -> None:
    statement = capability("Observation", "Condition")
    respx.get(f"{BASE}/metadata").respond(json=statement)
    asked = respx.get(f"{BASE}/Observation/_history").respond(
        json={**history([entry("PUT", "Observation/o1", INSTANT)]), "total": 7800}
    )
    respx.get(f"{BASE}/Condition/_history").respond(json={**history([]), "total": 3})
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        assert await changes_since(client, ["Patient", "Observation", "Condition"], SINCE) == 7803
    params = asked.calls.last.request.url.params
    assert (params["_since"], params["_count"]) == (INSTANT, "1")


@respx.mock
async def test_changes_since_is_unknown_without_a_total() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Observation", "Condition"))
    respx.get(f"{BASE}/Observation/_history").respond(json={**history([]), "total": 5})
    respx.get(f"{BASE}/Condition/_history").respond(json=history([]))  # total is optional
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        assert await changes_since(client, ["Observation", "Condition"], SINCE) is None
