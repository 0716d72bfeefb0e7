"""The export: kick-off, poll, download (once more if a file was gone), clean up; and the way
a screen gets its population either way (`export_or_search`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from service.errors import BulkExportUnsupported, BulkFileGone, FhirError
from service.fhir.bulk.download import Gone, download_all, prepare, remove
from service.fhir.bulk.job import kick_off, poll
from service.fhir.bulk.request import (
    ExportRequest,
    Level,
    observation_type_filters,
    plan_types,
)
from service.fhir.bulk.results import MAX_ISSUES_KEPT, BulkPolicy, ExportProgress, ExportResult
from service.fhir.bulk.search import Writer, group_members, search_to_ndjson, search_types
from service.fhir.bulk.session import Clock, Session, Sleep
from service.fhir.client import FhirClient
from service.fhir.plan import FetchPlan

__all__ = ["export", "export_or_search", "offers_export"]

log = logging.getLogger("service.fhir.bulk")


async def export(
    client: FhirClient,
    out_dir: Path,
    request: ExportRequest,
    *,
    poll_limit_s: float = 3600.0,
    progress: Callable[[ExportProgress], None] | None = None,
    policy: BulkPolicy | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    delete_when_done: bool = True,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> ExportResult:
    """Bulk-export what `request` asks for (`ExportRequest.of(types, level=...)`) into
    `out_dir`.

    `out_dir` must be empty or absent. For an incremental export, pass the previous result's
    `transaction_time` as the request's `since`. Faults are handled as the module docstring
    lists; on return every output file is complete on disk.
    """
    prepare(out_dir)
    s = Session(client, policy or BulkPolicy(), allow_hosts, sleep, clock, progress)
    written: list[Path] = []
    lost: Gone | None
    for attempt in (1, 2):
        job = await kick_off(s, request)
        s.report("kick-off", job)
        log.info("export job %s started (%s)", job, request.level.path())
        try:
            manifest = await poll(s, job, poll_limit_s)
            try:
                files, issues, deleted, unreadable = await download_all(
                    s, manifest, out_dir, job, written
                )
            except Gone as gone:
                lost = gone
            else:
                lost = None
        except (Exception, asyncio.CancelledError) as exc:
            remove(written)
            await s.cancel(job, type(exc).__name__)
            raise
        if lost is not None:
            remove(written)
            await s.cancel(job, "a file was gone")
            expiry = f", expiring {manifest.expires.isoformat()}" if manifest.expires else ""
            if attempt == 2:
                raise BulkFileGone(
                    f"export file {lost.item.url} ({lost.item.type}) gone ({lost.status}) "
                    f"again after a fresh export (job {job}{expiry})",
                    url=lost.item.url,
                    http_status=lost.status,
                )
            log.warning(
                "export file %s gone (%d%s); kicking off the export once more",
                lost.item.url,
                lost.status,
                expiry,
            )
            continue
        if delete_when_done:
            await s.cancel(job, "files downloaded")
        kept = issues[:MAX_ISSUES_KEPT]
        if issues:
            errors = sum(i.severity in ("error", "fatal") for i in issues)
            log.warning(
                "export job %s reported %d issue(s), %d error(s); first: %s",
                job,
                len(issues),
                errors,
                issues[0],
            )
        for issue in kept:
            log.info("export issue %s", issue)
        s.report("complete", f"{len(files)} files", len(files), len(files))
        return ExportResult(
            out_dir=out_dir,
            method="bulk-export",
            transaction_time=manifest.transaction_time,
            files=tuple(files),
            issues=tuple(kept),
            issue_count=len(issues),
            deleted=tuple(deleted),
            deleted_unreadable=unreadable,
            job=job,
            request=manifest.request,
            expires=manifest.expires,
            kick_offs=attempt,
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def offers_export(client: FhirClient, level: str = "system") -> bool | None:
    """Whether the CapabilityStatement declares $export at `level`; None if unreadable."""
    kind = Level.parse(level).kind
    try:
        capability = await client.capability()
    except FhirError as exc:
        log.warning("CapabilityStatement unreadable (%s); trying $export anyway", exc.message)
        return None
    for rest in capability.get("rest") or ():
        if not isinstance(rest, dict):
            continue
        if kind == "system":
            operations = rest.get("operation") or ()
        else:
            wanted = "Patient" if kind == "patient" else "Group"
            operations = next(
                (
                    r.get("operation") or ()
                    for r in rest.get("resource") or ()
                    if isinstance(r, dict) and r.get("type") == wanted
                ),
                (),
            )
        names = {str(op.get("name", "")).lstrip("$") for op in operations if isinstance(op, dict)}
        if "export" in names:
            return True
    return False


async def export_or_search(
    client: FhirClient,
    out_dir: Path,
    plan: FetchPlan,
    *,
    level: str = "system",
    since: datetime | None = None,
    poll_limit_s: float = 3600.0,
    progress: Callable[[ExportProgress], None] | None = None,
    use_type_filter: bool = False,
    policy: BulkPolicy | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> ExportResult:
    """What a screen needs, by $export where the server offers it, else by searches.

    Falls back when the CapabilityStatement lacks $export at `level`, or when it could not
    be read and the kick-off answers 404/405/501. After a Patient/Group-level export, planned
    types without a file are read by search (a server may leave types out of its compartment
    export; where there are none, the search finds none).
    """
    types = plan_types(plan)
    offered = await offers_export(client, level)
    if offered is False:
        log.warning("the server declares no $export at level %s; searching instead", level)
        return await search_to_ndjson(
            client, out_dir, plan, level=level, since=since, progress=progress
        )
    try:
        result = await export(
            client,
            out_dir,
            ExportRequest.of(
                types,
                level=level,
                type_filters=observation_type_filters(plan) if use_type_filter else None,
                since=since,
            ),
            poll_limit_s=poll_limit_s,
            progress=progress,
            policy=policy,
            allow_hosts=allow_hosts,
            sleep=sleep,
            clock=clock,
        )
    except BulkExportUnsupported as exc:
        if offered:
            raise
        log.warning("%s; searching instead", exc.message)
        return await search_to_ndjson(
            client, out_dir, plan, level=level, since=since, progress=progress
        )
    parsed = Level.parse(level)
    missing = [t for t in types if t not in result.counts()]
    if parsed.kind == "system" or not missing:
        return result
    log.info("types without a file in the %s export, read by search: %s", level, missing)
    s = Session(client, policy or BulkPolicy(), allow_hosts, sleep, clock, progress)
    members = await group_members(client, parsed.group) if parsed.group else None
    written: list[Path] = []
    writer = Writer(out_dir, written)
    try:
        await search_types(client, writer, missing, plan, since, members, s)
    except BaseException:
        writer.close()
        remove([*written, *(f.path for f in result.files)])
        raise
    return ExportResult(
        out_dir=result.out_dir,
        method=result.method,
        transaction_time=result.transaction_time,
        files=(*result.files, *writer.close()),
        issues=result.issues,
        issue_count=result.issue_count,
        deleted=result.deleted,
        deleted_unreadable=result.deleted_unreadable,
        job=result.job,
        request=result.request,
        expires=result.expires,
        kick_offs=result.kick_offs,
        searched=tuple(missing),
    )
