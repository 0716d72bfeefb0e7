"""Deletions from type-level history: what an incremental sweep learns besides the export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import respx

from service.fhir.client import FhirClient, RetryPolicy
from service.fhir.history import deleted_since, history_types

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


@respx.mock
async def test_the_newest_change_decides_and_older_pages_are_not_read() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Condition"))
    # sekmet-fhir's next link drops _since: page 2 would list the whole history
    page2 = f"{BASE}/Condition/_history?_count=200&_offset=4"
    first = respx.get(f"{BASE}/Condition/_history", params={"_since": INSTANT}).respond(
        json=history(
            [
                entry("DELETE", "Condition/c1", "2026-11-21T10:00:00.000Z"),
                entry("PUT", "Condition/c2", "2026-11-21T09:00:00.000Z"),  # re-created...
                entry("DELETE", "Condition/c2", "2026-11-21T08:00:00.000Z"),  # ...after this
                entry("DELETE", "Condition/c3", "2026-11-19T08:00:00.000Z"),  # before since
            ],
            next_url=page2,
        )
    )
    second = respx.get(page2).respond(json=history([]))
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        found = await deleted_since(client, ["Patient", "Condition"], SINCE, INSTANT)
    assert found.references == frozenset({"Condition/c1"})
    assert (found.checked, found.unchecked) == (("Condition",), ("Patient",))
    assert first.call_count == 1
    assert second.call_count == 0, "stopped at the first entry older than since"


@respx.mock
async def test_history_pages_are_followed_while_entries_are_recent() -> None:
    respx.get(f"{BASE}/metadata").respond(json=capability("Observation"))
    page2 = f"{BASE}/Observation/_history?page=2"
    respx.get(f"{BASE}/Observation/_history", params={"_since": INSTANT}).respond(
        json=history([entry("DELETE", "Observation/o1", "2026-11-22T00:00:00Z")], page2)
    )
    respx.get(page2).respond(
        json=history([entry("DELETE", "Observation/o2", "2026-11-21T00:00:00+08:00")])
    )
    async with FhirClient(BASE, retry=RetryPolicy(attempts=1)) as client:
        found = await deleted_since(client, ["Observation"], SINCE, INSTANT)
    assert found.references == frozenset({"Observation/o1", "Observation/o2"})
