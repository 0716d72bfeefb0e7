"""What a FHIR server deleted since a moment: the half of an incremental sweep that an
export with `_since` does not return.

An incremental Bulk export brings what changed, not what was removed. Deletions come from

1. the manifest's `deleted` files (Bulk Data IG v2: SHALL be filled when `_since` is given),
   read by service.fhir.bulk into `ExportResult.deleted`;
2. type-level history, `[type]/_history?_since=`, for each type whose CapabilityStatement
   entry declares the `history-type` interaction (this module). Many servers (sekmet-fhir
   0.1.1 among them) list no `deleted` files but keep history.

A reference counts as deleted when its newest history entry since then is a DELETE: a
resource deleted and created again is not. History is sorted newest first (FHIR R4
3.1.0.11.2), so reading stops at the first entry older than `since`. Vendor note: sekmet-fhir
0.1.1 drops `_since` from its next links; the stop, and checking each entry's
`response.lastModified`, make that harmless.

Cost. A history since the last sweep holds every version written since: after an import of
new patients, thousands of entries that the export brings anyway. Pages are asked for
HISTORY_PAGE_SIZE entries, not the client's search page size: on some servers each page costs
a pass over the type's whole history (sekmet-fhir 0.1.1 counts and sorts every version for
every page), so 200 a page made paging quadratic (8-20 s against 2.6 s at 1000 for 8,500
entries, scripts/bench_incremental.py). Servers cap `_count` at their own maximum (sekmet:
1000) and page on, so asking for more is safe.

`deleted_during(client, types, since, work)` reads the history while `work` (the export)
runs, so its wait is not added to the export's. The deletions must still cover everything up
to the export's transactionTime, which the server may fix after the history was read. So once
the export is done, each type's history is read again, from the newest change the first
reading saw on its first page (or from `since` when there was none): that change was already
there when the server answered, so the second reading starts no later than the first one's
view of the type and ends after the export; between them they miss no change from `since` on.
The second reading holds only what changed while the export ran (one short page per type on
a quiet server), and its entries are the newer: its verdict on a reference stands.

`changes_since(client, types, since)` counts the versions the history holds since then (each
type's `Bundle.total` of a one-entry page; None when the server gives no total), for a caller
to tell whether a change is small enough for reading history to pay (service/sweeps/
population.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from service.fhir.bulk.request import fhir_instant
from service.fhir.client import FhirClient

__all__ = [
    "HISTORY_PAGE_SIZE",
    "HistoryDeletions",
    "changes_since",
    "deleted_during",
    "history_types",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
HISTORY_PAGE_SIZE = 1000  # entries asked for per history page (the module docstring: Cost)


@dataclass(frozen=True)
class HistoryDeletions:
    references: frozenset[str]  # `Type/id` whose newest change since then is a delete
    checked: tuple[str, ...]  # types whose history was read
    unchecked: tuple[str, ...]  # types the server keeps no type-level history for


def history_types(capability: dict[str, Any], types: Sequence[str]) -> list[str]:
    """Those of `types` for which the CapabilityStatement declares `history-type`."""
    declared: set[str] = set()
    for rest in capability.get("rest") or ():
        if not isinstance(rest, dict):
            continue
        for resource in rest.get("resource") or ():
            if not isinstance(resource, dict):
                continue
            codes = {
                i.get("code") for i in resource.get("interaction") or () if isinstance(i, dict)
            }
            if "history-type" in codes:
                declared.add(str(resource.get("type")))
    return [t for t in types if t in declared]


def _reference(entry: dict[str, Any]) -> str | None:
    """`Type/id` an entry is about: its request URL, else its fullUrl, else its resource."""
    request = entry.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if not isinstance(url, str) or "/" not in url:
        url = entry.get("fullUrl")
    if isinstance(url, str) and "/" in url:
        parts = url.split("?")[0].split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return f"{parts[-2]}/{parts[-1]}"
    resource = entry.get("resource")
    if isinstance(resource, dict) and resource.get("id"):
        return f"{resource.get('resourceType')}/{resource['id']}"
    return None


def _modified(entry: dict[str, Any]) -> datetime | None:
    response = entry.get("response")
    value = response.get("lastModified") if isinstance(response, dict) else None
    if not isinstance(value, str):
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass
class _Reading:
    """One reading of a type's history: each `Type/id`'s newest change (True: a DELETE) and
    the time of the newest change on the first page (None: no entry, or none dated)."""

    newest: dict[str, bool]
    top: datetime | None


async def _read(client: FhirClient, kind: str, since: datetime) -> _Reading:
    instant = fhir_instant(since)
    reading = _Reading({}, None)
    read = 0
    entries = client.history(kind, {"_since": instant, "_count": str(HISTORY_PAGE_SIZE)})
    async with contextlib.aclosing(entries):
        async for entry in entries:
            read += 1
            modified = _modified(entry)
            if read == 1:
                reading.top = modified
            if modified is not None and modified < since:
                break  # newest first: the rest is older
            reference = _reference(entry)
            if reference is None or reference in reading.newest:
                continue
            request = entry.get("request")
            is_delete = isinstance(request, dict) and request.get("method") == "DELETE"
            reading.newest[reference] = is_delete
    log.debug("history of %s since %s: %d entries read", kind, instant, read)
    return reading


async def _read_all(
    client: FhirClient, types: Sequence[str], since: dict[str, datetime]
) -> dict[str, _Reading]:
    """Each type's history from its own moment, one type after the other (one request in
    flight beside the export)."""
    return {kind: await _read(client, kind, since[kind]) for kind in types}


def _result(
    types: Sequence[str], checked: Sequence[str], newest: dict[str, bool], since: datetime
) -> HistoryDeletions:
    deleted = frozenset(r for r, is_delete in newest.items() if is_delete)
    unchecked = tuple(t for t in types if t not in checked)
    if unchecked:
        log.warning("no type-level history for %s: deletions there rely on the export", unchecked)
    log.info("history since %s: %d deletion(s) in %d type(s)", since, len(deleted), len(checked))
    return HistoryDeletions(deleted, tuple(checked), unchecked)


async def changes_since(client: FhirClient, types: Sequence[str], since: datetime) -> int | None:
    """The versions of `types` the server's history holds since `since` (the sum of each
    type's `Bundle.total`), or None when a type's total is not given (it is optional).
    Types without type-level history count nothing."""
    checked = history_types(await client.capability(), types)
    query = {"_since": fhir_instant(since), "_count": "1"}
    pages = await asyncio.gather(
        *(client.get_json(client.search_url(f"{kind}/_history", query)) for kind in checked)
    )
    counted = 0
    for page in pages:
        total = page.get("total")
        if page.get("type") != "history" or not isinstance(total, int) or total < 0:
            return None
        counted += total
    return counted


A = TypeVar("A")
B = TypeVar("B")


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results; the first failure cancels the other and is raised as it is (not in an
    ExceptionGroup: callers tell a refused `_since` by its type)."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        await asyncio.wait((one, two), return_when=asyncio.FIRST_EXCEPTION)
        for task in (one, two):
            error = task.exception() if task.done() else None
            if error is not None:
                raise error
        return one.result(), two.result()
    finally:
        for task in (one, two):
            task.cancel()
        await asyncio.gather(one, two, return_exceptions=True)


async def deleted_during(
    client: FhirClient, types: Sequence[str], since: datetime, work: Awaitable[T]
) -> tuple[T, HistoryDeletions]:
    """`work`'s result, and the deletions since `since` (the server's clock) up to the end of
    `work` at least: read while `work` runs and once more after it (the module docstring
    says why the two miss nothing)."""

    async def first_reading() -> tuple[list[str], dict[str, _Reading]]:
        checked = history_types(await client.capability(), types)
        return checked, await _read_all(client, checked, dict.fromkeys(checked, since))

    done, (checked, first) = await _both(work, first_reading())
    again = {k: max(since, first[k].top or since) for k in checked}
    second = await _read_all(client, checked, again)
    newest: dict[str, bool] = {}
    for kind in checked:
        newest.update(first[kind].newest)
        newest.update(second[kind].newest)  # the newer entries decide
    return done, _result(types, checked, newest, since)
