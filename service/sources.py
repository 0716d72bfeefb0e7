"""Reading FHIR resources from files: JSON Bundles, single resources, Bulk-style NDJSON.

Every resource comes with where it was read (`file:line` or `file#entry`), so a bad one can
be named in a one-line error and skipped while the rest of the run goes on.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

__all__ = ["Chunk", "SourceError", "bundle_entries", "chunks", "read_chunk"]

SUFFIXES = (".json", ".ndjson", ".ndjson.gz", ".jsonl")
CHUNK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceError:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A unit of reading work: a whole file, or a byte range of a large NDJSON file."""

    path: str
    start: int = 0
    end: int | None = None  # None: to the end of the file


def _is_data_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES) and not path.name.startswith(".")


def chunks(root: Path, chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """Split the input into chunks; NDJSON files larger than `chunk_bytes` are cut at lines."""
    if not root.exists():
        raise FileNotFoundError(f"no such file or directory: {root}")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if _is_data_file(p))
    found: list[Chunk] = []
    for path in files:
        size = path.stat().st_size
        if not path.name.endswith((".ndjson", ".jsonl")) or size <= chunk_bytes:
            found.append(Chunk(str(path)))
            continue
        with path.open("rb") as handle:
            start = 0
            while start < size:
                handle.seek(min(start + chunk_bytes, size))
                handle.readline()  # move to the end of the line the cut fell in
                end = min(handle.tell(), size)
                found.append(Chunk(str(path), start, end))
                start = end
    return found


def total_bytes(items: list[Chunk]) -> int:
    return sum((c.end if c.end is not None else os.path.getsize(c.path)) - c.start for c in items)


def read_chunk(chunk: Chunk) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Yield (resource, where, error) for each resource in the chunk.

    A line or entry that is not a JSON object yields (None, where, message).
    """
    name = chunk.path
    if name.endswith((".ndjson", ".jsonl", ".ndjson.gz")):
        yield from _ndjson(chunk)
        return
    try:
        data = orjson.loads(Path(name).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        yield None, name, f"not valid JSON ({_short(exc)})"
        return
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        yield None, name, "not a FHIR resource (no resourceType)"
        return
    if data["resourceType"] != "Bundle":
        yield data, name, None
        return
    yield from bundle_entries(data, name)


def bundle_entries(
    bundle: dict[str, Any], name: str
) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Entries of a Bundle, with `urn:uuid:` references to its Patients made relative."""
    entries = bundle.get("entry") or []
    patients: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(full_url, str):
            if "id" not in resource and full_url.startswith("urn:uuid:"):
                resource["id"] = full_url.removeprefix("urn:uuid:")
            if resource.get("resourceType") == "Patient":
                patients[full_url] = f"Patient/{resource.get('id')}"
    for index, entry in enumerate(entries):
        where = f"{name}#entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            yield None, where, "entry has no FHIR resource"
            continue
        if patients:
            for field in ("subject", "patient", "individual"):
                ref = resource.get(field)
                if isinstance(ref, dict) and ref.get("reference") in patients:
                    resource[field] = {**ref, "reference": patients[ref["reference"]]}
        yield resource, where, None


def _open(chunk: Chunk) -> BinaryIO:
    if chunk.path.endswith(".gz"):
        return gzip.open(chunk.path, "rb")  # type: ignore[return-value]
    return open(chunk.path, "rb")


def _ndjson(chunk: Chunk) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    with _open(chunk) as handle:
        handle.seek(chunk.start)
        position = chunk.start
        line_number = 0 if chunk.start == 0 else None
        for line in handle:
            if chunk.end is not None and position >= chunk.end:
                break
            position += len(line)
            if line_number is not None:
                line_number += 1
            where = (
                f"{chunk.path}:{line_number}"
                if line_number is not None
                else f"{chunk.path}@{position - len(line)}"
            )
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield None, where, f"not valid JSON ({_short(exc)})"
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                yield None, where, "not a FHIR resource (no resourceType)"
                continue
            yield resource, where, None


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]
