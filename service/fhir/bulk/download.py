"""Downloading a manifest's files: each streamed to `.<name>.part` and renamed when whole,
fetched again from its start on a temporary failure (the retry helper), a few at once; error
and `deleted` files read into issues and references. A file gone (404/410) raises `Gone` for
the export to start over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from service.errors import ControlFlow, FhirFatalError, FhirMalformedResponse, FhirTemporaryError
from service.fhir.bulk.manifest import Manifest, ManifestItem, deleted_in, issues_in
from service.fhir.bulk.request import NDJSON, RESOURCE_TYPE
from service.fhir.bulk.results import ExportFile, ExportIssue
from service.fhir.bulk.session import Session, suffix
from service.fhir.responses import (
    TRANSIENT_STATUSES,
    operation_outcome,
    retry_after_s,
    status_error,
)
from service.fhir.transport import Retry

__all__ = ["Gone", "LineCounter", "download_all", "prepare", "remove"]

log = logging.getLogger("service.fhir.bulk")
T = TypeVar("T")


class Gone(ControlFlow):
    """A manifest file answered 404/410."""

    def __init__(self, item: ManifestItem, status: int) -> None:
        super().__init__(item.url)
        self.item = item
        self.status = status


class LineCounter:
    """Counts non-blank lines of a byte stream fed in chunks cut anywhere."""

    def __init__(self) -> None:
        self.lines = 0
        self.unterminated = False  # the stream so far ends inside a non-blank line

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        for line in parts[:-1]:
            if self.unterminated or line.strip():
                self.lines += 1
            self.unterminated = False
        if parts[-1].strip():
            self.unterminated = True

    def close(self) -> None:
        if self.unterminated:
            self.lines += 1


async def _fetch(
    s: Session,
    item: ManifestItem,
    auth: bool,
    consume: Callable[[httpx.Response], Awaitable[T]],
) -> T:
    """Stream one manifest file into `consume`, from the start again on transient failures."""

    async def classify(response: httpx.Response) -> T | Retry:
        status = response.status_code
        if status == 200:
            return await consume(response)
        await response.aread()
        outcome = operation_outcome(response)
        detail = suffix(outcome)
        if status in (404, 410):
            raise Gone(item, status)
        if status in (401, 403):
            raise status_error(status, outcome, item.url)
        if status not in TRANSIENT_STATUSES and status < 500:
            raise FhirFatalError(
                f"download of {item.url} answered {status}{detail}",
                url=item.url,
                http_status=status,
                outcome=outcome,
            )
        problem = f"download of {item.url} answered {status}"
        error = FhirTemporaryError(problem, url=item.url, http_status=status)
        return Retry(error, retry_after_s(response.headers.get("Retry-After")))

    request = s.client.build("GET", item.url, accept=NDJSON)
    return await s.send(request, classify, signed=auth, stream=True, what=f"download of {item.url}")


async def _save(s: Session, item: ManifestItem, path: Path, auth: bool) -> ExportFile:
    part = path.with_name(f".{path.name}.part")  # dot files are not read by a screen

    async def write(response: httpx.Response) -> ExportFile:
        counter = LineCounter()
        try:
            with part.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    counter.feed(chunk)
                if counter.unterminated:
                    out.write(b"\n")  # so the last resource is a whole line for the reader
            counter.close()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(path)
        return ExportFile(item.type, path, item.url, counter.lines, item.count)

    return await _fetch(s, item, auth, write)


async def _read_errors(s: Session, item: ManifestItem, auth: bool) -> list[ExportIssue]:
    async def parse(response: httpx.Response) -> list[ExportIssue]:
        found: list[ExportIssue] = []
        number = 0
        async for line in response.aiter_lines():
            number += 1
            if line.strip():
                found.extend(issues_in(line, f"{item.url}:{number}"))
        return found

    return await _fetch(s, item, auth, parse)


async def _read_deleted(s: Session, item: ManifestItem, auth: bool) -> tuple[list[str], int]:
    """`Type/id` of every DELETE entry in a `deleted` file (one Bundle a line), and how many
    lines could not be read."""

    async def parse(response: httpx.Response) -> tuple[list[str], int]:
        found: list[str] = []
        unreadable = 0
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                found.extend(deleted_in(line))
            except ValueError:
                unreadable += 1
        return found, unreadable

    return await _fetch(s, item, auth, parse)


async def download_all(
    s: Session, manifest: Manifest, out_dir: Path, job: str, written: list[Path]
) -> tuple[list[ExportFile], list[ExportIssue], list[str], int]:
    for item in (*manifest.output, *manifest.error, *manifest.deleted):
        s.trusted(item.url, "export file URL", job)
    auth = manifest.requires_access_token
    numbers: dict[str, int] = {}
    targets = []
    for item in manifest.output:
        if not RESOURCE_TYPE.fullmatch(item.type):
            raise FhirMalformedResponse(f"manifest output type {item.type!r} ({job})", url=job)
        numbers[item.type] = numbers.get(item.type, 0) + 1
        path = out_dir / f"{item.type}-{numbers[item.type]}.ndjson"
        written.append(path)
        targets.append((item, path))
    total = len(targets) + len(manifest.error) + len(manifest.deleted)
    gate = asyncio.Semaphore(s.policy.concurrency)
    done = 0

    async def one(work: Awaitable[T]) -> T:
        nonlocal done
        async with gate:
            result = await work
        done += 1
        s.report("download", f"{done} of {total} files", done, total)
        return result

    saves = [asyncio.ensure_future(one(_save(s, item, path, auth))) for item, path in targets]
    reads = [asyncio.ensure_future(one(_read_errors(s, item, auth))) for item in manifest.error]
    deletions = [
        asyncio.ensure_future(one(_read_deleted(s, item, auth))) for item in manifest.deleted
    ]
    tasks: list[asyncio.Future[Any]] = [*saves, *reads, *deletions]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    files = [task.result() for task in saves]
    issues = [issue for task in reads for issue in task.result()]
    deleted = [ref for task in deletions for ref in task.result()[0]]
    unreadable = sum(task.result()[1] for task in deletions)
    if unreadable:
        issues.append(
            ExportIssue(
                "error",
                "structure",
                f"{unreadable} line(s) of the `deleted` files unreadable: deletions unknown",
                job,
            )
        )
    for export_file in files:
        if export_file.expected is not None and export_file.expected != export_file.lines:
            fewer = export_file.lines < export_file.expected
            issues.append(
                ExportIssue(
                    "error" if fewer else "warning",
                    "incomplete" if fewer else "informational",
                    f"{export_file.lines} lines, manifest count {export_file.expected}",
                    export_file.url or str(export_file.path),
                )
            )
    return files, issues, deleted, unreadable


def prepare(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        # Files of another run would be screened with this one's; a fresh directory each time.
        raise ValueError(f"out_dir must be empty: {out_dir}")


def remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.part").unlink(missing_ok=True)
    paths.clear()
