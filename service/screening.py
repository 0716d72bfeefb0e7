"""Screen a population read from files: map, group by patient, evaluate, rank.

Bulk NDJSON is sorted by resource type, not by patient, so a patient's facts arrive
scattered. Rather than hold the population in memory, stage 1 drops the resources no
criterion can use (most Observations, recognised from their bytes) and appends the rest, as
read, to one of N partition files by a hash of the patient; stage 2 loads one partition at a
time, maps, groups, evaluates and writes each result as a JSON line; ranking then sorts
small summaries and reads results back in order.
Peak memory is one partition, whatever the population. Both stages run in worker
processes when given more than one.

Medication resources name no patient: stage 1 writes them apart (`medications-<chunk>.jsonl`,
their `Medication/<id>` and the line as read), and stage 2 gives every patient's screen the
one `MedicationTable` of them, so a record naming `Medication/123` reads it wherever it was
exported (Bulk's Medication.ndjson, another Bundle). The table is held per process as lines,
each parsed when a record first names it (a hospital's formulary is some thousands).
"""

from __future__ import annotations

import gc
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from service.config import Settings
from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.mappers import MedicationTable
from service.patient_screen import (
    Record,
    Screened,
    load_screening_context,
    screen_patient_records,
)
from service.ranking import sort_key
from service.routing import Router
from service.sources import (
    Chunk,
    LineReader,
    SourceError,
    chunks,
    total_bytes,
)
from service.spool import exit_with_parent, new_spool, spool_root
from service.terminology import Terminology

__all__ = [
    "Progress",
    "ScreenOptions",
    "ScreenRun",
    "Screener",
    "Summary",
    "patient_line_filter",
    "screen",
    "screen_one",
]

log = logging.getLogger(__name__)
MAX_ERRORS_KEPT = 1000
Progress = Callable[[str, int, int], None]  # stage ("read", "evaluate"), done, of total


@dataclass(frozen=True, slots=True)
class ScreenOptions:
    """How to run a screen, shared by `screen` and `service.spark.spark_screen`.

    `workers`: processes (default: 1 below 64 MB of input, else one per CPU; Spark has its
    executors instead); `partitions`: groups of patients (default: by input size and
    workers); `spool`: where results are kept (default: a new one under `spool_dir`, else
    COHORT_MATCH_SPOOL_DIR, else the temp directory, removed by `ScreenRun.close()`);
    `by_reference`: name each record by its `Type/id` rather than file and line (for files
    no user knows, such as a sweep's snapshot); `progress`: called as stages advance."""

    workers: int | None = None
    partitions: int | None = None
    spool: Path | None = None
    spool_dir: Path | None = None
    by_reference: bool = False
    progress: Progress | None = None

    def open_spool(self, name: str) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
        """`spool`, or a new one named after `name` (and the directory to clean up)."""
        if self.spool is not None:
            return self.spool, None
        root = spool_root(self.spool_dir if self.spool_dir is not None else Settings().spool_dir)
        tmp = new_spool(root, name)
        return Path(tmp.name), tmp


class Screener(Protocol):
    """A screen of files: `screen`, or `service.spark.spark_screen` (a sweep runs either)."""

    def __call__(
        self,
        data: Path,
        trial_path: Path,
        terminology_root: Path,
        as_of: date,
        *,
        options: ScreenOptions | None = ...,
        site_map: Path | None = ...,
        mrn_type: str = ...,
    ) -> ScreenRun: ...


@dataclass(frozen=True, slots=True)
class Summary:
    """What ranking and the table need of one result; the full result stays on disk."""

    reference: str
    status: str
    score: float
    fails: int
    unknowns: int
    age: int | None
    sex: str | None
    next_step: str | None
    partition: int
    offset: int
    length: int
    mrn: str | None = None  # the patient's identifier of the configured type

    def key(self) -> tuple[Any, ...]:
        return sort_key(self.status, self.score, self.fails, self.reference)


@dataclass
class ScreenRun:
    """The outcome of a screen: ranked summaries, counts, errors, and the results on disk."""

    trial: TrialDefinition
    terms: Terminology
    as_of: date
    summaries: list[Summary]
    resources: int
    errors: list[SourceError]
    error_count: int
    spool: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        counts = {
            "patients": len(self.summaries),
            "likely_eligible": 0,
            "possibly_eligible": 0,
            "ineligible": 0,
        }
        for summary in self.summaries:
            counts[summary.status] += 1
        counts["resources"] = self.resources
        counts["errors"] = self.error_count
        return counts

    def result_bytes(self, summary: Summary) -> bytes:
        """One patient's full result (the output contract), as JSON with its rank."""
        with (self.spool / f"results-{summary.partition}.jsonl").open("rb") as handle:
            handle.seek(summary.offset)
            return handle.read(summary.length)

    def results(self) -> Iterator[dict[str, Any]]:
        """Full results in rank order, each with its `rank`."""
        for rank, summary in enumerate(self.summaries, start=1):
            result = orjson.loads(self.result_bytes(summary))
            result["rank"] = rank
            yield result

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ---------------------------------------------------------------- worker side
def _load(
    trial_path: str, terminology_root: str, site_map: str | None
) -> tuple[TrialDefinition, Terminology]:
    """The trial and code tables, loaded once per process (service/patient_screen.py)."""
    context = load_screening_context(
        trial_path, terminology_root, date.min, site_map=site_map, warm_up=False
    )
    return context.trial, context.terms


@lru_cache(maxsize=2)
def _router(terms: Terminology) -> Router:
    return Router(terms)


@dataclass(frozen=True, slots=True)
class _Job:
    trial_path: str
    terminology_root: str
    site_map: str | None
    spool: str
    partitions: int
    as_of: date
    only: str | None = None  # screen just this patient reference
    # Name each record by its `Type/id` rather than file and line: for files that are no
    # source a user knows (a sweep's snapshot of a FHIR server), the reference is the name.
    by_reference: bool = False
    mrn_type: str = "MR"  # the identifier type shown as `mrn` (COHORT_MATCH_MRN_TYPE)


def _partition_of(patient: str, partitions: int) -> int:
    return zlib.crc32(patient.encode()) % partitions if partitions > 1 else 0


class _Routed:
    """Stage 1's output files of one chunk, each opened when first written: a Bundle (one
    file, one chunk, usually one patient) fills one partition, and opening, closing and later
    reading back an empty file for every other partition, per Bundle, cost more than routing
    its resources."""

    def __init__(self, spool: str, index: int, partitions: int) -> None:
        self.spool, self.index, self.partitions = Path(spool), index, partitions
        self.handles: dict[int | str, BinaryIO] = {}
        # patient -> its partition file and its part of each line, worked out once per patient
        self.patients: dict[str, tuple[BinaryIO, bytes]] = {}

    def _handle(self, name: int | str) -> BinaryIO:
        handle = self.handles.get(name)
        if handle is None:
            prefix = "medications" if name == "shared" else f"routed-{name}"
            path = self.spool / f"{prefix}-{self.index}.jsonl"
            handle = self.handles[name] = open(path, "wb", buffering=1 << 20)
        return handle

    def patient(self, where: str, patient: str, body: bytes) -> None:
        # where, the patient (as JSON: no raw separator in it), the resource
        found = self.patients.get(patient)
        if found is None:
            handle = self._handle(_partition_of(patient, self.partitions))
            found = self.patients[patient] = (handle, b"\x1f" + orjson.dumps(patient) + b"\x1f")
        handle, named = found
        handle.write(where.encode() + named + body + b"\n")

    def shared(self, key: str, body: bytes) -> None:
        """A Medication, for the side table: its `Medication/<id>` and the resource."""
        self._handle("shared").write(orjson.dumps(key) + b"\x1f" + body + b"\n")

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _route_chunk(job: _Job, index: int, chunk: Chunk) -> tuple[int, list[SourceError], int]:
    """Stage 1: read one chunk, drop what no criterion can use (resource types no mapper
    reads; Observations whose codes are in no value set, most of them recognised from the
    line's bytes without parsing), and append the rest, with where it was read and its
    patient, to the partition file of its patient: an NDJSON line as read, so it is not
    serialized again. Medications go to the chunk's side-table file. Mapping waits for
    stage 2, so facts are never pickled."""
    _, terms = _load(job.trial_path, job.terminology_root, job.site_map)
    router = _router(terms)
    errors: list[SourceError] = []
    error_count = 0
    resources = 0
    out = _Routed(job.spool, index, job.partitions)
    reader = LineReader(chunk, router.skip)
    try:
        for resource, where, error, line in reader:
            if resource is None:
                error_count += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(SourceError(where, error or "unreadable"))
                continue
            resources += 1
            route = router.resource(resource)
            if route.problem is not None:
                error_count += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(SourceError(where, route.problem))
                continue
            if route.shared is not None:
                out.shared(route.shared, _body(line, resource))
                continue
            patient = route.patient
            if patient is None or (job.only is not None and patient != job.only):
                continue
            if job.by_reference and isinstance(resource.get("id"), str):
                where = f"{resource['resourceType']}/{resource['id']}"
            out.patient(where, patient, _body(line, resource))
    finally:
        out.close()
    return resources + reader.skipped, errors, error_count


def _body(line: bytes | None, resource: dict[str, Any]) -> bytes:
    """An NDJSON line as read (not serialized again), or a Bundle entry serialized."""
    return line.rstrip(b"\r\n") if line is not None else orjson.dumps(resource)


@lru_cache(maxsize=1)
def _medications(spool: str, chunk_count: int) -> MedicationTable:
    """The run's side table of Medication resources (stage 1's `medications-*.jsonl`), read
    once per process: the parent reads it before stage 2's workers fork."""
    table = MedicationTable()
    for index in range(chunk_count):
        path = Path(spool) / f"medications-{index}.jsonl"
        if not path.exists():
            continue
        with path.open("rb") as handle:
            for line in handle:
                raw_key, body = line.rstrip(b"\n").split(b"\x1f", 1)
                table.add_line(orjson.loads(raw_key), body)
    return table


def _forget_medications(spool: Path) -> None:
    """The side table is the run's: not kept in this process, nor in the spool, after it."""
    _medications.cache_clear()
    for path in spool.glob("medications-*.jsonl"):
        path.unlink(missing_ok=True)


def _evaluate_partition(
    job: _Job, partition: int, chunk_count: int
) -> tuple[list[Summary], list[SourceError], int]:
    """Stage 2: group one partition's records by patient and screen each patient
    (`screen_patient`), in reference order, writing each result as a JSON line."""
    context = load_screening_context(
        job.trial_path,
        job.terminology_root,
        job.as_of,
        site_map=job.site_map,
        mrn_type=job.mrn_type,
        warm_up=False,  # built in the parent before the workers forked (see `screen`)
    )
    by_json: dict[bytes, list[Record]] = {}  # the patient's reference as JSON -> records
    for index in range(chunk_count):
        path = Path(job.spool) / f"routed-{partition}-{index}.jsonl"
        if not path.exists():  # no patient of this partition in that chunk
            continue
        with path.open("rb") as handle:
            for line in handle:
                raw_where, raw_patient, raw = line.split(b"\x1f", 2)
                record = Record(raw, raw_where.decode())
                found = by_json.get(raw_patient)
                if found is None:
                    by_json[raw_patient] = [record]
                else:
                    found.append(record)
        path.unlink()
    # decoded once per patient (stage 1 writes each reference's JSON alike)
    patients: dict[str, list[Record]] = {orjson.loads(k): v for k, v in by_json.items()}
    del by_json
    medications = _medications(job.spool, chunk_count)
    errors: list[SourceError] = []
    error_count = 0
    summaries = []
    # Neither facts nor results form cycles: the collector would only re-walk them.
    gc.disable()
    try:
        with (Path(job.spool) / f"results-{partition}.jsonl").open("wb") as out:
            for reference in sorted(patients):
                screened = screen_patient_records(
                    patients.pop(reference), context, patient=reference, medications=medications
                )
                for bad in screened.unreadable:
                    error_count += 1
                    if len(errors) < MAX_ERRORS_KEPT:
                        # named by its reference, a record's message names it already
                        named = "" if bad.where == bad.reference else bad.where or ""
                        errors.append(SourceError(named, bad.message))
                summaries.append(_write_result(out, screened.result, partition))
    finally:
        gc.enable()
    return summaries, errors, error_count


def _write_result(out: BinaryIO, result: PatientResult, partition: int) -> Summary:
    """Write one result as a JSON line; its summary says where."""
    payload = orjson.dumps(result)
    offset = out.tell()
    out.write(payload + b"\n")
    verdicts = [c.verdict for c in result.criteria]
    return Summary(
        reference=result.patient.reference,
        status=result.status,
        score=result.score,
        fails=verdicts.count("fail"),
        unknowns=verdicts.count("unknown"),
        age=result.patient.age,
        sex=result.patient.sex,
        next_step=next_step(result),
        partition=partition,
        offset=offset,
        length=len(payload),
        mrn=result.patient.mrn,
    )


def next_step(result: PatientResult) -> str | None:
    """What a coordinator does next (ranking.next_step: for an ineligible patient, why)."""
    return result.next_step


# ---------------------------------------------------------------- driver
def _partition_count(size: int, workers: int) -> int:
    """One partition per 48 MB of input (peak memory is one partition), one more per
    worker, at most 256; a multiple of the workers, as one left over would run alone."""
    wanted = size // (48 * 1024 * 1024) + (workers if workers > 1 else 0)
    return max(1, min(256 - 256 % workers, -(-wanted // workers) * workers))


def screen(
    data: Path,
    trial_path: Path,
    terminology_root: Path,
    as_of: date,
    *,
    options: ScreenOptions | None = None,
    site_map: Path | None = None,
    only_patient: str | None = None,
    mrn_type: str = "MR",
) -> ScreenRun:
    """Screen every patient found under `data`. Call `close()` on the run when done.

    Without `options.spool`, one is made under `options.spool_dir` (default
    COHORT_MATCH_SPOOL_DIR, else the temp directory) and removed by `close()` or a failure
    (service/spool.py)."""
    options = options or ScreenOptions()
    progress = options.progress
    work = chunks(data)
    size = total_bytes(work)
    workers = options.workers
    if workers is None:
        workers = 1 if size < 64 * 1024 * 1024 else max(1, os.cpu_count() or 1)
    partitions = options.partitions
    if partitions is None:
        partitions = _partition_count(size, workers)
    spool, tmp = options.open_spool("screen")
    job = _Job(
        str(trial_path),
        str(terminology_root),
        str(site_map) if site_map else None,
        str(spool),
        partitions,
        as_of,
        only_patient,
        options.by_reference,
        mrn_type,
    )
    trial, terms = _load(job.trial_path, job.terminology_root, job.site_map)
    log.info(
        "screening %d chunk(s), %d bytes, %d worker(s), %d partition(s)",
        len(work),
        size,
        workers,
        partitions,
    )

    def run(
        fn: Callable[..., Any],
        args: list[tuple[Any, ...]],
        stage: str,
        meanwhile: Callable[[], None] = lambda: None,
    ) -> list[Any]:
        done: list[Any] = []
        if workers == 1:
            meanwhile()
            for item in args:
                done.append(fn(*item))
                if progress:
                    progress(stage, len(done), len(args))
            return done
        with ProcessPoolExecutor(
            max_workers=workers, initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            outcomes = pool.map(fn, *zip(*args, strict=True))  # submitted; workers forked
            meanwhile()
            for outcome in outcomes:
                done.append(outcome)
                if progress:
                    progress(stage, len(done), len(args))
        return done

    try:
        # Stage 1 maps nothing (but a resource naming no patient), so its workers need no
        # UCUM registry: build it while they read, and stage 2's workers, forked after,
        # inherit it instead of each parsing pint's definitions again (about 1 s).
        mapped = run(_route_chunk, [(job, i, c) for i, c in enumerate(work)], "read", terms.warm_up)
        _medications(job.spool, len(work))  # read once here; forked workers inherit it
        evaluated = run(
            _evaluate_partition, [(job, p, len(work)) for p in range(partitions)], "evaluate"
        )
    except BaseException:
        if tmp is not None:  # a failed or interrupted screen leaves no spool behind
            tmp.cleanup()
        raise
    finally:
        _forget_medications(spool)
    resources = sum(m[0] for m in mapped)
    errors = [e for m in mapped for e in m[1]][:MAX_ERRORS_KEPT]
    error_count = sum(m[2] for m in mapped)
    errors = (errors + [e for part in evaluated for e in part[1]])[:MAX_ERRORS_KEPT]
    error_count += sum(part[2] for part in evaluated)
    summaries = sorted((s for part in evaluated for s in part[0]), key=Summary.key)
    return ScreenRun(trial, terms, as_of, summaries, resources, errors, error_count, spool, tmp)


# ---------------------------------------------------------------- one patient
_PLAIN_ID = re.compile(rb"[A-Za-z0-9.\-]+")  # FHIR's id characters: JSON never escapes them


def patient_line_filter(patient: str) -> Callable[[bytes], bool] | None:
    """A byte test that is true for NDJSON lines that cannot belong to `patient`
    (`Patient/<id>`): its id is nowhere in the line. Such a line names the patient neither
    as a Patient's `id` nor in a reference (`Patient/<id>`, a full URL, `/_history/`). A
    writer may spell any character as `\\uXXXX`, so lines with such an escape are kept; an id
    with characters beyond FHIR's (which JSON may escape otherwise) gets no filter (None)."""
    ident = patient.removeprefix("Patient/").encode()
    if not _PLAIN_ID.fullmatch(ident):
        return None
    return lambda line: ident not in line and b"\\u" not in line


def screen_one(
    data: Path,
    trial_path: Path,
    terminology_root: Path,
    as_of: date,
    patient: str,
    *,
    site_map: Path | None = None,
    mrn_type: str = "MR",
) -> Screened | None:
    """One patient (`Patient/<id>`) of the files under `data`, without screening the rest:
    lines that do not name the patient are passed over from their bytes
    (`patient_line_filter`; Medication lines are read, for the side table), the others
    routed as `screen` routes them, and the patient's records screened in this process
    (`screen_patient_records`). None when no record names the patient. Records are named
    as `screen` names them (file and line), so the result is the one `screen` gives for
    this patient."""
    context = load_screening_context(
        trial_path, terminology_root, as_of, site_map=site_map, mrn_type=mrn_type, warm_up=False
    )
    router = _router(context.terms)
    mine = patient_line_filter(patient)

    def skip(line: bytes) -> bool:
        # A Medication names no patient: its line is read whatever the patient.
        others = mine is not None and mine(line) and b'"Medication"' not in line
        return others or router.skip(line)

    records: list[Record] = []
    medications = MedicationTable()
    for chunk in chunks(data):
        for resource, where, _, _ in LineReader(chunk, skip):
            # unreadable lines and routing problems name no patient: not this one's business
            if resource is None:
                continue
            route = router.resource(resource)
            if route.shared is not None:
                medications.add(resource)
            elif route.patient == patient:
                records.append(Record(resource, where))
    if not records:
        return None
    return screen_patient_records(records, context, patient=patient, medications=medications)
