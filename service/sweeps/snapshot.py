"""A sweep's copy of what the trial reads, kept so the next run asks the FHIR server only for
what changed since (`_since`) and still screens everyone at its own as_of.

    <root>/<trial id>/<key>/run-<id>/resources.ndjson   one resource a line: screen() reads
                                                         the directory like an export
                                     unkeyed.ndjson     this run's resources without an id
                                                         (screened, not carried on)
                                     .keys              `Type/id` of each resources line
                                     .unreadable        lines that were no resource, by the
                                                         `Type/id` they show: reported by every
                                                         run until the record comes anew
                                     .snapshot.json     what it is (SnapshotInfo)
    <root>/<trial id>/<key>/.run-<id>.part/             being built by run <id>

A run builds `.run-<id>.part` and renames it to `run-<id>` only after the store has marked the
run completed; older snapshots of the key are then removed. A killed or failed run leaves a
`.part` that the next run of the trial removes (it holds the trial's claim, so no other run
is building one). A run that finds no snapshot exports in full: losing a snapshot costs
time, never data.

The key names what was exported and how it was filtered (source, export level, trial and
code-table versions): a snapshot is merged only into a run that would have exported and kept
the same resources. An incremental build replaces every resource the delta names (kept or
not: an Observation recoded out of every value set must leave), removes the deleted ones,
and copies the rest from the previous snapshot by its `.keys`, without parsing them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from service.mappers import subject_of
from service.sources import SourceError, chunks, read_chunk

__all__ = ["DeltaCounts", "SnapshotBuilder", "SnapshotInfo", "Snapshots", "snapshot_key"]

log = logging.getLogger(__name__)
RESOURCES = "resources.ndjson"
UNKEYED = "unkeyed.ndjson"
KEYS = ".keys"
UNREADABLE = ".unreadable"  # {"key", "message"} of lines that were no resource
INFO = ".snapshot.json"
RUN_DIR = re.compile(r"run-(\d+)")
# The key of a line that is not JSON, when it begins as servers write resources.
RAW_KEY = re.compile(rb'^\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"\s*,\s*"id"\s*:\s*"([^"\\]+)"')
MAX_ERRORS_KEPT = 1000


def snapshot_key(
    source: str,
    level: str,
    trial_id: str,
    trial_version: str,
    terminology_version: str,
    types: Sequence[str] = (),
) -> str:
    """Snapshots are reused only for the same source, level, trial, code tables and resource
    types: a snapshot exported before a type was read (MedicationAdministration, say) lacks
    that type's unchanged records, which an incremental export would never bring."""
    parts = (source.rstrip("/"), level, trial_id, trial_version, terminology_version)
    text = "\n".join(parts + ((",".join(sorted(types)),) if types else ()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SnapshotInfo:
    run_id: int
    key: str
    transaction_time: dt.datetime  # the `_since` of the next run
    full_export_time: dt.datetime  # transactionTime of the last full export in the chain
    resources: int
    reusable: bool = True  # False: a delta line named nothing readable; next run is full

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotInfo:
        data = orjson.loads(raw)
        for name in ("transaction_time", "full_export_time"):
            data[name] = dt.datetime.fromisoformat(data[name])
        return cls(**data)


@dataclass
class DeltaCounts:
    """What a build took in: resources read, kept, replaced or removed, patients touched."""

    read: int = 0
    kept: int = 0  # resources of the delta that the trial reads
    carried: int = 0  # resources copied from the previous snapshot
    replaced: int = 0  # previous versions dropped for a changed resource
    deleted: int = 0  # previous versions dropped for a deletion
    unreadable: int = 0  # lines that are no resource, this delta's and still unresolved ones
    untracked: int = 0  # of this delta's, lines whose `Type/id` could not be told
    unkeyed: int = 0  # resources without an id: screened by this run only
    patients: int = 0  # distinct patients with a changed or deleted resource

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Snapshots:
    """The snapshots of one trial and key under `root`."""

    def __init__(self, root: Path, trial_id: str, key: str) -> None:
        self.key = key
        self.dir = root / trial_id / key

    def latest(self) -> tuple[Path, SnapshotInfo] | None:
        """The newest complete snapshot, if any (an unreadable one is skipped)."""
        if not self.dir.is_dir():
            return None
        found = sorted(
            (
                (int(match.group(1)), path)
                for path in self.dir.iterdir()
                if (match := RUN_DIR.fullmatch(path.name)) and path.is_dir()
            ),
            reverse=True,
        )
        for _, path in found:
            try:
                info = SnapshotInfo.from_json((path / INFO).read_bytes())
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("snapshot %s unreadable (%s); ignored", path, exc)
                continue
            if info.key == self.key:
                return path, info
        return None

    def part(self, run_id: int) -> Path:
        return self.dir / f".run-{run_id}.part"

    def start(self, run_id: int) -> SnapshotBuilder:
        """A builder for run `run_id`, after removing what killed runs left."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.dir.glob(".run-*.part"):
            shutil.rmtree(path, ignore_errors=True)
        return SnapshotBuilder(self.part(run_id))

    def promote(self, run_id: int) -> None:
        """Make run `run_id`'s snapshot the current one; remove the older ones."""
        target = self.dir / f"run-{run_id}"
        self.part(run_id).rename(target)
        for path in self.dir.iterdir():
            if path != target and RUN_DIR.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)

    def discard(self, run_id: int) -> None:
        shutil.rmtree(self.part(run_id), ignore_errors=True)


class SnapshotBuilder:
    """Builds one snapshot directory: `take(delta, base, deleted)` then `finish(info)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.errors: list[SourceError] = []

    def take(
        self,
        delta: Path,
        keep: Callable[[dict[str, Any]], bool],
        base: Path | None = None,
        deleted: Iterable[str] = (),
    ) -> DeltaCounts:
        """Resources of the export in `delta` that `keep` accepts, on top of the `base`
        snapshot's (without those the delta replaces and those `deleted` names)."""
        counts = DeltaCounts()
        changed: set[str] = set()  # every Type/id the delta names, kept or not
        patients: set[str] = set()
        track = base is not None
        delta_lines = self.path / ".delta.ndjson"
        delta_keys = self.path / ".delta.keys"
        with (
            delta_lines.open("wb") as lines,
            delta_keys.open("wb") as keys,
            (self.path / UNKEYED).open("wb") as unkeyed,
            (self.path / UNREADABLE).open("wb") as unreadable,
        ):
            for resource, where, error in _read(delta):
                counts.read += 1
                if resource is None:
                    self._unreadable(counts, delta, where, error, changed, unreadable)
                    continue
                key = _key_of(resource)
                if key is None:
                    counts.unkeyed += 1
                    unkeyed.write(orjson.dumps(resource) + b"\n")
                    continue
                if track:
                    if key in changed:
                        continue  # the same resource twice in one delta: the first wins
                    changed.add(key)
                    patient = _patient_of(resource)
                    if patient:
                        patients.add(patient)
                if keep(resource):
                    counts.kept += 1
                    lines.write(orjson.dumps(resource) + b"\n")
                    keys.write(key.encode() + b"\n")
        gone = set(deleted) - changed  # a resource in the delta exists now, whatever history says
        with (
            (self.path / RESOURCES).open("wb") as out,
            (self.path / KEYS).open("wb") as out_keys,
        ):
            if base is not None:
                self._carry(base, changed, gone, counts, patients, out, out_keys)
                self._carry_unreadable(base, changed, gone, counts)
            for source, target in ((delta_lines, out), (delta_keys, out_keys)):
                with source.open("rb") as handle:
                    shutil.copyfileobj(handle, target)
        delta_lines.unlink()
        delta_keys.unlink()
        counts.patients = len(patients)
        return counts

    def _unreadable(
        self,
        counts: DeltaCounts,
        delta: Path,
        where: str,
        error: str | None,
        changed: set[str],
        out: BinaryIO,
    ) -> None:
        """A line that is not a resource: reported (`errors`), not screened, and kept in
        `.unreadable` so that later runs report it again until the server sends the record
        anew, as a full export would. If the line still shows its `Type/id`, a previous
        version is dropped; if not, the snapshot must not be trusted next time (it may keep
        a stale version of whatever that was, and could not report the line again)."""
        raw = _raw_line(where) if counts.unreadable < MAX_ERRORS_KEPT else None
        match = RAW_KEY.match(raw) if raw is not None else None
        message = error or "unreadable"
        if match is None:
            counts.untracked += 1
            self._report(counts, where.replace(f"{delta}/", "export:", 1), message)
            return
        key = f"{match.group(1).decode()}/{match.group(2).decode()}"
        changed.add(key)
        self._report(counts, key, message)
        out.write(orjson.dumps({"key": key, "message": message}) + b"\n")

    def _report(self, counts: DeltaCounts, where: str, message: str) -> None:
        counts.unreadable += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(SourceError(where, message))

    def _carry_unreadable(
        self, base: Path, changed: set[str], gone: set[str], counts: DeltaCounts
    ) -> None:
        """Unreadable records of earlier runs that the delta neither replaced nor deleted."""
        path = base / UNREADABLE
        if not path.exists():
            return
        with path.open("rb") as lines, (self.path / UNREADABLE).open("ab") as out:
            for line in lines:
                entry = orjson.loads(line)
                if entry["key"] in changed or entry["key"] in gone:
                    continue
                self._report(counts, entry["key"], entry["message"])
                out.write(line)

    def _carry(
        self,
        base: Path,
        changed: set[str],
        gone: set[str],
        counts: DeltaCounts,
        patients: set[str],
        out: BinaryIO,
        out_keys: BinaryIO,
    ) -> None:
        with (base / RESOURCES).open("rb") as lines, (base / KEYS).open("rb") as keys:
            for line, raw_key in zip(lines, keys, strict=True):
                key = raw_key.rstrip(b"\n").decode()
                if key in changed:
                    counts.replaced += 1
                    continue
                if key in gone:
                    counts.deleted += 1
                    patient = _patient_of(orjson.loads(line))
                    if patient:
                        patients.add(patient)
                    continue
                counts.carried += 1
                out.write(line)
                out_keys.write(raw_key)

    def finish(self, info: SnapshotInfo) -> None:
        (self.path / INFO).write_bytes(info.to_json())


def _read(root: Path) -> Iterable[tuple[dict[str, Any] | None, str, str | None]]:
    if not root.exists():
        return
    for chunk in chunks(root):
        yield from read_chunk(chunk)


def _raw_line(where: str) -> bytes | None:
    """The bytes of the NDJSON line `file:line` names (unreadable lines are rare)."""
    path, _, number = where.rpartition(":")
    if not number.isdigit() or not path.endswith((".ndjson", ".jsonl")):
        return None
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        for index, line in enumerate(handle, start=1):
            if index == int(number):
                return line
    return None


def _key_of(resource: dict[str, Any]) -> str | None:
    kind, ident = resource.get("resourceType"), resource.get("id")
    if isinstance(kind, str) and isinstance(ident, str) and ident:
        return f"{kind}/{ident}"
    return None


def _patient_of(resource: dict[str, Any]) -> str | None:
    try:
        return subject_of(resource)
    except (TypeError, AttributeError):
        return None
