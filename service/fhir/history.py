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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.fhir.client import FhirClient

__all__ = ["HistoryDeletions", "deleted_since", "history_types"]

log = logging.getLogger(__name__)


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


async def deleted_since(
    client: FhirClient, types: Sequence[str], since: datetime, instant: str
) -> HistoryDeletions:
    """Read each type's history since `since` (sent as `instant`, the server's format)."""
    checked = history_types(await client.capability(), types)
    deleted: set[str] = set()
    for kind in checked:
        newest: set[str] = set()
        read = 0
        entries = client.history(kind, {"_since": instant})
        async with contextlib.aclosing(entries):
            async for entry in entries:
                read += 1
                modified = _modified(entry)
                if modified is not None and modified < since:
                    break  # newest first: the rest is older
                reference = _reference(entry)
                if reference is None or reference in newest:
                    continue
                newest.add(reference)
                request = entry.get("request")
                if isinstance(request, dict) and request.get("method") == "DELETE":
                    deleted.add(reference)
        log.debug("history of %s: %d entries read", kind, read)
    unchecked = tuple(t for t in types if t not in checked)
    if unchecked:
        log.warning("no type-level history for %s: deletions there rely on the export", unchecked)
    log.info("history since %s: %d deletion(s) in %d type(s)", instant, len(deleted), len(checked))
    return HistoryDeletions(frozenset(deleted), tuple(checked), unchecked)
