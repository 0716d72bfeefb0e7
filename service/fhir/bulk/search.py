"""The search fallback: what a screen needs read with plain searches (the client's paging,
retries and checks) into the same NDJSON layout an export writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from service.fhir.bulk.download import prepare, remove
from service.fhir.bulk.request import Level, fhir_instant, plan_types
from service.fhir.bulk.results import BulkPolicy, ExportFile, ExportProgress, ExportResult
from service.fhir.bulk.session import Session
from service.fhir.client import FhirClient
from service.fhir.plan import FetchPlan

__all__ = ["Writer", "group_members", "search_to_ndjson", "search_types"]

log = logging.getLogger("service.fhir.bulk")


@dataclass
class Writer:
    """Writes resources as `<Type>-1.ndjson`, opening a file only when it gets a line."""

    out_dir: Path
    written: list[Path]
    handles: dict[str, BinaryIO] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def write(self, kind: str, resource: dict[str, Any]) -> None:
        handle = self.handles.get(kind)
        if handle is None:
            path = self.out_dir / f"{kind}-1.ndjson"
            self.written.append(path)
            handle = self.handles[kind] = path.open("wb")
            self.lines[kind] = 0
        handle.write(orjson.dumps(resource) + b"\n")
        self.lines[kind] += 1

    def close(self) -> list[ExportFile]:
        for handle in self.handles.values():
            handle.close()
        return [
            ExportFile(kind, self.out_dir / f"{kind}-1.ndjson", None, count)
            for kind, count in self.lines.items()
        ]


def _patient_reference(text: object) -> str | None:
    """`Patient/<id>` of a reference's text (relative, absolute or versioned), if it is one."""
    if not isinstance(text, str) or "Patient/" not in text:
        return None
    identifier = text.split("/_history/")[0].rstrip("/").split("Patient/")[-1]
    return f"Patient/{identifier}" if identifier and "/" not in identifier else None


def _patient_of(resource: dict[str, Any]) -> str | None:
    """The `Patient/<id>` a resource is about: a Patient itself, or the first of `subject`,
    `patient`, `individual` (FHIR R4 names the patient so in every type a screen reads)."""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}"
    for name in ("subject", "patient", "individual"):
        value = resource.get(name)
        if isinstance(value, dict) and "reference" in value:
            return _patient_reference(value["reference"])
    return None


async def group_members(client: FhirClient, group: str) -> frozenset[str]:
    """`Patient/<id>` of every member of the Group."""
    resource = await client.read("Group", group)
    members = set()
    for member in resource.get("member") or ():
        reference = (
            (member.get("entity") or {}).get("reference") if isinstance(member, dict) else None
        )
        if isinstance(reference, str) and "Patient/" in reference:
            members.add("Patient/" + reference.split("Patient/")[-1].split("/_history/")[0])
    return frozenset(members)


async def search_types(
    client: FhirClient,
    writer: Writer,
    types: Sequence[str],
    plan: FetchPlan,
    since: datetime | None,
    members: frozenset[str] | None,
    s: Session,
) -> None:
    """Page each type with plain searches into `writer`; Observation by the plan's codes,
    except with `since`: then every changed Observation, so that one recoded out of the
    plan's codes reaches the caller (which must drop its previous version)."""
    base: dict[str, str] = {}
    if since is not None:
        base["_lastUpdated"] = f"ge{fhir_instant(since)}"  # ge: overlap rather than miss
    for kind in types:
        if kind == "Observation" and since is None:
            queries = [{**base, "code": codes} for codes in plan.observation_queries()]
        else:
            queries = [base]
        # An Observation coded in two chunks (a local and a LOINC code) comes back twice.
        seen: set[str] | None = set() if len(queries) > 1 else None
        # A Medication names no patient: a Group's members may name any of them.
        shared = kind in plan.shared_types
        for params in queries:
            async for resource in client.search(kind, params):
                if members is not None and not shared and _patient_of(resource) not in members:
                    continue
                if seen is not None:
                    key = str(resource.get("id"))
                    if key in seen:
                        continue
                    seen.add(key)
                writer.write(kind, resource)
        s.report("search", f"{kind}: {writer.lines.get(kind, 0)}")


async def search_to_ndjson(
    client: FhirClient,
    out_dir: Path,
    plan: FetchPlan,
    *,
    level: str = "system",
    since: datetime | None = None,
    types: Sequence[str] | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportResult:
    """Read what a screen needs with searches and write the export layout into `out_dir`.

    For servers without $export. Patient and every planned type are paged with the client
    (its retries, strict handling, next-link checks); Observation only for the plan's codes.
    A Group level reads the Group and keeps its members' resources (every resource of each
    type is still read: there is no portable "patient in list" search), and every Medication
    (they name no patient). Unlike an export,
    the searches are no snapshot: a record changed meanwhile may show in one type and not
    another. `transaction_time` is our clock before the first request, so using it as
    `since` next time overlaps rather than misses.
    """
    parsed = Level.parse(level)
    if since is not None:
        fhir_instant(since)
    prepare(out_dir)
    started = datetime.now(UTC)
    s = Session(client, BulkPolicy(), frozenset(), asyncio.sleep, time.monotonic, progress)
    members = await group_members(client, parsed.group) if parsed.group else None
    wanted = list(types) if types is not None else plan_types(plan)
    written: list[Path] = []
    writer = Writer(out_dir, written)
    try:
        await search_types(client, writer, wanted, plan, since, members, s)
    except BaseException:
        writer.close()
        remove(written)
        raise
    files = writer.close()
    s.report("complete", f"{len(files)} files", len(files), len(files))
    return ExportResult(
        out_dir=out_dir,
        method="search",
        transaction_time=started,
        files=tuple(files),
        searched=tuple(wanted),
    )
