"""Reading FHIR resources from files: JSON Bundles, single resources, Bulk-style NDJSON.

Every resource comes with where it was read (`file:line` or `file#entry`), so a bad one can
be named in a one-line error and skipped while the rest of the run goes on.

A population screen reads far more Observations than any criterion uses (vital signs, panels
of other tests). `observation_prefilter` recognises most of those from the line's bytes, so
`LineReader` can pass them over without parsing; see its docstring for what it must never do.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

__all__ = [
    "Chunk",
    "LineReader",
    "SourceError",
    "bundle_entries",
    "chunks",
    "observation_prefilter",
    "read_chunk",
]

SUFFIXES = (".json", ".ndjson", ".ndjson.gz", ".jsonl")
CHUNK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceError:
    where: str
    message: str

    def __str__(self) -> str:  # no `where`: the message names the record itself
        return f"{self.where}: {self.message}" if self.where else self.message


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
    for resource, where, error, _ in LineReader(chunk):
        yield resource, where, error


class LineReader:
    """`read_chunk`, with each resource's bytes as read, and lines nobody needs passed over.

    Iterating yields (resource, where, error, line): `line` is the NDJSON line the resource
    was parsed from, as read (a caller copying the resource elsewhere can write these bytes
    instead of serializing it again), or None for a Bundle entry or a single-resource file,
    whose references may have been rewritten. A line that `skip` accepts is not parsed and
    yields nothing; `skipped` counts them once iteration ends.
    """

    def __init__(self, chunk: Chunk, skip: Callable[[bytes], bool] | None = None) -> None:
        self.chunk = chunk
        self.skip = skip
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[dict[str, Any] | None, str, str | None, bytes | None]]:
        name = self.chunk.path
        if name.endswith((".ndjson", ".jsonl", ".ndjson.gz")):
            yield from self._ndjson()
            return
        try:
            data = orjson.loads(Path(name).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            yield None, name, f"not valid JSON ({_short(exc)})", None
            return
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            yield None, name, "not a FHIR resource (no resourceType)", None
            return
        if data["resourceType"] != "Bundle":
            yield data, name, None, None
            return
        for resource, where, error in bundle_entries(data, name):
            yield resource, where, error, None

    def _ndjson(self) -> Iterator[tuple[dict[str, Any] | None, str, str | None, bytes | None]]:
        chunk, skip = self.chunk, self.skip
        end = chunk.end if chunk.end is not None else math.inf
        numbered = chunk.start == 0  # a chunk cut from inside a file names byte offsets
        position, number, skipped = chunk.start, 0, 0
        with _open(chunk) as handle:
            handle.seek(chunk.start)
            try:
                for line in handle:
                    if position >= end:
                        break
                    position += len(line)
                    number += 1
                    if skip is not None and skip(line):
                        skipped += 1
                        continue
                    where = (
                        f"{chunk.path}:{number}"
                        if numbered
                        else f"{chunk.path}@{position - len(line)}"
                    )
                    if not line.strip():
                        continue
                    try:
                        resource = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield None, where, f"not valid JSON ({_short(exc)})", None
                        continue
                    if not isinstance(resource, dict) or not isinstance(
                        resource.get("resourceType"), str
                    ):
                        yield None, where, "not a FHIR resource (no resourceType)", None
                        continue
                    yield resource, where, None, line
            finally:
                self.skipped += skipped


def bundle_entries(
    bundle: dict[str, Any], name: str
) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """Entries of a Bundle, with `urn:uuid:` (or other fullUrl) references to its Patients
    and Medications made relative (`Patient/<id>`, `Medication/<id>`), as a file or a server
    would name them; an entry without an id gets its `urn:uuid:`. The Bundle is not changed:
    an entry that needs either is yielded as a copy."""
    entries = bundle.get("entry") or []
    ids: dict[int, str] = {}  # entry index -> the id its urn:uuid gives it
    patients: dict[str, str] = {}  # fullUrl -> Patient/<id>
    medications: dict[str, str] = {}  # fullUrl -> Medication/<id>
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(full_url, str):
            ident = resource.get("id")
            if "id" not in resource and full_url.startswith("urn:uuid:"):
                ident = ids[index] = full_url.removeprefix("urn:uuid:")
            kind = resource.get("resourceType")
            if kind == "Patient":
                patients[full_url] = f"Patient/{ident}"
            elif kind == "Medication" and isinstance(ident, str):
                medications[full_url] = f"Medication/{ident}"
    for index, entry in enumerate(entries):
        where = f"{name}#entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            yield None, where, "entry has no FHIR resource"
            continue
        changes: dict[str, Any] = {"id": ids[index]} if index in ids else {}
        for field, targets in (
            ("subject", patients),
            ("patient", patients),
            ("individual", patients),
            ("medicationReference", medications),
        ):
            ref = resource.get(field) if targets else None
            if isinstance(ref, dict) and ref.get("reference") in targets:
                changes[field] = {**ref, "reference": targets[ref["reference"]]}
        yield ({**resource, **changes} if changes else resource), where, None


def observation_prefilter(
    may_match: Callable[[Any], bool], cache_size: int = 1 << 14
) -> Callable[[bytes], bool]:
    """A test, on an NDJSON line's bytes, that it is an Observation whose `code` fails
    `may_match`: what a screen would parse only to drop.

    Only the `code` value is parsed (and its verdict cached: a population repeats a few
    hundred codes), and only when the line shows where that value is:
    - it begins `{"resourceType":"Observation",`;
    - its first `,"code":{` comes before any other `{` or `[`: no object or array was open
      there, nor a string (in one, the quote after the comma would close it, and valid
      JSON has no `code"` right after a string), so this is the top-level `code` member;
    - the bytes from that `{` to the first `}` after the first `}]` (the end of the last
      coding, of `coding`, then of `code`, unless a string holds one) parse on their own:
      in valid JSON they are then exactly the `code` value, neither more nor less;
    - it ends with `}` (a truncated line is parsed, and reported);
    - it has no `"component"` (a panel's components are read by their own codes).
    Anything else is parsed as before. A line accepted here is not otherwise validated:
    JSON broken after its code, or a second top-level `code` (invalid FHIR, where orjson
    keeps the last), is passed over instead of being reported.
    """
    head, member = b'{"resourceType":"Observation",', b',"code":{'
    ends = (b"}", b"}\n", b"}\r\n")
    verdicts: dict[bytes, bool] = {}

    def irrelevant(line: bytes) -> bool:
        if not line.startswith(head):
            return False
        start = line.find(member, len(head) - 1)
        if start < 0 or line.find(b"{", 1, start) >= 0 or line.find(b"[", 1, start) >= 0:
            return False
        codings_end = line.find(b"}]", start)
        end = line.find(b"}", codings_end + 2) if codings_end >= 0 else -1
        if end < 0 or not line.endswith(ends):
            return False
        value = line[start + len(member) - 1 : end + 1]
        verdict = verdicts.get(value)
        if verdict is None:
            try:
                code = orjson.loads(value)
            except orjson.JSONDecodeError:
                return False  # not the whole value: not cached, it may hold anything
            verdict = not may_match(code)
            if len(verdicts) < cache_size:
                verdicts[value] = verdict
        # A panel whose own code no value set knows may carry one in a component (a CBC's
        # WBC): parsed, so the mapper reads its components.
        return verdict and b'"component"' not in line

    return irrelevant


def _open(chunk: Chunk) -> BinaryIO:
    if chunk.path.endswith(".gz"):
        return gzip.open(chunk.path, "rb")  # type: ignore[return-value]
    return open(chunk.path, "rb")


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]
