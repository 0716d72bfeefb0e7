"""The Spark job: read, route, group by patient, `screen_patient`, write (see __init__).

    lines (where, bytes)  NDJSON by Hadoop's TextInputFormat (`file@byte-offset`), Parquet
                          rows (`file`), Bundles and single-resource .json files whole
      -> mapPartitions(route)      Router: kept (patient, where, line), Medications
                                   (`Medication/<id>`, line), errors, counts
      -> collect + broadcast       the Medications: one side table for every patient
      -> groupByKey(patient)       a patient's lines from every file meet here
      -> mapPartitions(screen)     screen_patient_records per patient (with the side
                                   table): summary columns, the result's JSON, the
                                   unreadable records
      -> Parquet (executors write it) -> the driver streams it into a spool -> ScreenRun

`mapPartitions` on the RDD rather than `mapInPandas`: each row becomes Python objects
anyway (a resource's dict, its facts), so Arrow batches would add pandas and pyarrow to the
executors (and a copy per row) for nothing; what Spark does per row is move bytes. The routed
lines are persisted (memory, then disk) because they are read twice: once to count and list
the errors, once to group. Routing and screening run in Python workers that load the code
tables once each (ScreeningContext pickles as its paths).

Medication resources name no patient (medication records name them by reference): they are
collected to the driver and broadcast as one `MedicationTable` of lines, parsed on an
executor when a record first names one, as the single-machine screen gives its side table
to every patient. A broadcast rather than a join: a formulary is some thousands of small
resources, and a join would copy each to every patient naming it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from service.mappers import MedicationTable
from service.patient_screen import (
    Record,
    ScreeningContext,
    load_screening_context,
    screen_patient_records,
)
from service.routing import Router
from service.screening import MAX_ERRORS_KEPT, ScreenOptions, ScreenRun, Summary, next_step
from service.sources import SourceError, bundle_entries
from service.terminology import Terminology

if TYPE_CHECKING:
    from pyspark import RDD, Broadcast
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

__all__ = ["SparkInput", "session", "spark_screen"]

log = logging.getLogger(__name__)

KEPT, SHARED, ERROR, COUNT = "k", "m", "e", "n"  # the tags of stage 1's output


@dataclass(frozen=True)
class SparkInput:
    """What to read: files or directories (searched recursively) on any file system Spark
    reads. `format` "auto" goes by each file's name (.ndjson, .ndjson.gz, .jsonl: NDJSON;
    .parquet: Parquet; .json: a Bundle or one resource); `column` is the Parquet column
    holding one resource's JSON (string or binary)."""

    paths: tuple[str, ...]
    format: Literal["auto", "ndjson", "parquet"] = "auto"
    column: str = "resource"


def session(master: str | None = None, app: str = "cohort-match") -> SparkSession:
    """A SparkSession (the active one, if any). `master` None: what spark-submit,
    spark-defaults.conf or PYSPARK_SUBMIT_ARGS say, else `local[*]`. A local master binds
    to the loopback interface and starts no web UI."""
    from pyspark.sql import SparkSession

    # pyspark starts its Python workers with PYSPARK_PYTHON ("python3" without it): in local
    # mode they must be this interpreter, with this package and its dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            builder = (
                builder.config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
            )
    return builder.getOrCreate()


# ---------------------------------------------------------------- executors
@lru_cache(maxsize=2)
def _router(terms: Terminology) -> Router:
    return Router(terms)


def _route(
    context: ScreeningContext, by_reference: bool, lines: Iterable[tuple[str, Any]]
) -> Iterator[tuple[Any, ...]]:
    """Stage 1 on one partition: (KEPT, patient, where, line) for every line a screen reads,
    (SHARED, `Medication/<id>`, line) for a Medication, (ERROR, where, message) for one it
    cannot route, and at the end (COUNT, resources read)."""
    router = _router(context.terms)
    resources = 0
    for where, raw in lines:
        line = raw.encode() if isinstance(raw, str) else bytes(raw) if raw is not None else b""
        if not line.strip():
            continue
        route = router(line)
        if route.problem is None or route.resource is not None:
            resources += 1
        if route.problem is not None:
            yield (ERROR, where, route.problem)
            continue
        if route.shared is not None:
            yield (SHARED, route.shared, line)
            continue
        if not route.kept:
            continue
        resource = route.resource
        if by_reference and resource is not None and isinstance(resource.get("id"), str):
            where = f"{resource['resourceType']}/{resource['id']}"
        yield (KEPT, route.patient, where, line)
    yield (COUNT, resources)


def _screen(
    context: ScreeningContext,
    medications: Broadcast[MedicationTable],
    groups: Iterable[tuple[str, Iterable[tuple[str, bytes]]]],
) -> Iterator[tuple[Any, ...]]:
    """Stage 2 on one partition: each patient's lines -> one row of RESULT_COLUMNS."""
    table = medications.value
    for reference, records in groups:
        screened = screen_patient_records(
            [Record(line, where) for where, line in records],
            context,
            patient=reference,
            medications=table,
        )
        result = screened.result
        verdicts = [c.verdict for c in result.criteria]
        unreadable = [
            ("" if u.where == u.reference else u.where or "", u.message)
            for u in screened.unreadable
        ]
        yield (
            reference,
            result.status,
            result.score,
            verdicts.count("fail"),
            verdicts.count("unknown"),
            result.patient.age,
            result.patient.sex,
            result.patient.mrn,
            next_step(result),
            orjson.dumps(result),
            unreadable,
        )


def _result_schema() -> StructType:
    from pyspark.sql.types import (
        ArrayType,
        BinaryType,
        DoubleType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    text = StringType()
    return StructType(
        [
            StructField("reference", text, False),
            StructField("status", text, False),
            StructField("score", DoubleType(), False),
            StructField("fails", IntegerType(), False),
            StructField("unknowns", IntegerType(), False),
            StructField("age", IntegerType(), True),
            StructField("sex", text, True),
            StructField("mrn", text, True),
            StructField("next_step", text, True),
            StructField("result", BinaryType(), False),  # the output contract, as JSON
            StructField(
                "unreadable",
                ArrayType(StructType([StructField("where", text), StructField("message", text)])),
                False,
            ),
        ]
    )


def _bundle_lines(item: tuple[str, bytes]) -> Iterator[tuple[str, bytes]]:
    """A .json file's resources as lines: a Bundle's entries (references to its Patients
    made relative), or the one resource; a file that is neither is one unreadable line."""
    name, data = item
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        yield name, data  # routed, and reported, as the line it is
        return
    if not isinstance(parsed, dict) or parsed.get("resourceType") != "Bundle":
        yield name, orjson.dumps(parsed)
        return
    for resource, where, error in bundle_entries(parsed, name):
        yield where, orjson.dumps(resource) if error is None else b"{}"


# ---------------------------------------------------------------- driver
def _local(uri: str) -> str:
    """A local file's name as the single-machine screen shows it (no `file:` scheme)."""
    return uri.removeprefix("file://") if uri.startswith("file:///") else uri.removeprefix("file:")


def _files(spark: SparkSession, paths: Iterable[str]) -> list[str]:
    """Every data file under `paths` (recursively), through Hadoop's FileSystem, so any
    scheme Spark is configured for works; hidden and `_`-prefixed files are passed over."""
    context = spark.sparkContext
    jvm: Any = context._jvm
    conf = context._jsc.hadoopConfiguration()
    found = []
    for path in paths:
        hadoop_path = jvm.org.apache.hadoop.fs.Path(str(path))
        listing = hadoop_path.getFileSystem(conf).listFiles(hadoop_path, True)
        while listing.hasNext():
            name = listing.next().getPath()
            if not name.getName().startswith((".", "_")):
                found.append(name.toString())
    return sorted(found)


def _lines(spark: SparkSession, source: SparkInput) -> RDD[tuple[str, Any]]:
    """(where, raw line) of every input file, by format."""
    from pyspark.sql import functions

    context = spark.sparkContext
    files = _files(spark, source.paths)
    text: list[str] = []
    parquet: list[str] = []
    whole: list[str] = []
    for name in files:
        kind = source.format
        if kind == "auto":
            if name.endswith((".ndjson", ".ndjson.gz", ".jsonl")):
                kind = "ndjson"
            elif name.endswith(".parquet"):
                kind = "parquet"
            elif name.endswith(".json"):
                whole.append(name)
                continue
            else:
                continue
        (text if kind == "ndjson" else parquet).append(name)
    parts: list[RDD[tuple[str, Any]]] = []
    for name in text:
        lines: RDD[tuple[int, str]] = context.newAPIHadoopFile(
            name,
            "org.apache.hadoop.mapreduce.lib.input.TextInputFormat",
            "org.apache.hadoop.io.LongWritable",
            "org.apache.hadoop.io.Text",
        )
        shown = _local(name)
        parts.append(lines.map(partial(_at_offset, shown)))
    if parquet:
        rows = spark.read.parquet(*parquet).select(
            functions.input_file_name().alias("file"), functions.col(source.column)
        )
        parts.append(rows.rdd.map(lambda row: (_local(row[0]), row[1])))
    if whole:
        parts.append(
            context.binaryFiles(",".join(whole))
            .map(lambda item: (_local(item[0]), item[1]))
            .flatMap(_bundle_lines)
        )
    if not parts:
        return context.emptyRDD()
    return context.union(parts)


def _at_offset(name: str, item: tuple[int, str]) -> tuple[str, str]:
    return f"{name}@{item[0]}", item[1]


def spark_screen(
    data: Path | str | SparkInput,
    trial_path: Path,
    terminology_root: Path,
    as_of: date,
    *,
    options: ScreenOptions | None = None,
    site_map: Path | None = None,
    mrn_type: str = "MR",
    spark: SparkSession | None = None,
    parquet_out: str | None = None,
) -> ScreenRun:
    """`service.screening.screen` on Spark: the same ScreenRun (call `close()` when done),
    the results also as Parquet at `parquet_out` (default: in the spool; on a cluster, give
    a path the executors and the driver share). `options.partitions`: how many groups of
    patients (default: Spark's default parallelism); `options.workers` is the single-machine
    screen's and is not used (Spark's executors are its workers)."""
    options = options or ScreenOptions()
    context = load_screening_context(
        trial_path, terminology_root, as_of, site_map=site_map, mrn_type=mrn_type
    )
    source = data if isinstance(data, SparkInput) else SparkInput((str(data),))
    spark = spark or session()
    spool, tmp = options.open_spool("spark")
    try:
        return _run(spark, context, source, spool, tmp, options, parquet_out)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise


def _run(
    spark: SparkSession,
    context: ScreeningContext,
    source: SparkInput,
    spool: Path,
    tmp: tempfile.TemporaryDirectory[str] | None,
    options: ScreenOptions,
    parquet_out: str | None,
) -> ScreenRun:
    from pyspark import StorageLevel

    report = options.progress or (lambda _stage, _done, _total: None)
    report("read", 0, 1)
    routed = _lines(spark, source).mapPartitions(partial(_route, context, options.by_reference))
    routed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        resources = routed.filter(lambda t: t[0] == COUNT).map(lambda t: t[1]).sum()
        unroutable = routed.filter(lambda t: t[0] == ERROR)
        error_count = unroutable.count()
        errors = [SourceError(t[1], t[2]) for t in unroutable.take(MAX_ERRORS_KEPT)]
        table = MedicationTable()
        for key, line in routed.filter(lambda t: t[0] == SHARED).map(lambda t: t[1:]).collect():
            table.add_line(key, bytes(line))
        medications = spark.sparkContext.broadcast(table)
        report("read", 1, 1)
        report("evaluate", 0, 1)
        groups = (
            routed.filter(lambda t: t[0] == KEPT)
            .map(lambda t: (t[1], (t[2], t[3])))
            .groupByKey(options.partitions or spark.sparkContext.defaultParallelism)
        )
        rows = groups.mapPartitions(partial(_screen, context, medications))
        out = parquet_out or str((spool / "results.parquet").resolve())
        spark.createDataFrame(rows, _result_schema()).write.mode("overwrite").parquet(out)
        medications.unpersist()
    finally:
        routed.unpersist()
    report("evaluate", 1, 1)
    summaries: list[Summary] = []
    later: list[tuple[str, SourceError]] = []
    with (spool / "results-0.jsonl").open("wb") as handle:
        for row in spark.read.schema(_result_schema()).parquet(out).toLocalIterator():
            payload = bytes(row["result"])
            offset = handle.tell()
            handle.write(payload + b"\n")
            summaries.append(
                Summary(
                    reference=row["reference"],
                    status=row["status"],
                    score=row["score"],
                    fails=row["fails"],
                    unknowns=row["unknowns"],
                    age=row["age"],
                    sex=row["sex"],
                    next_step=row["next_step"],
                    partition=0,
                    offset=offset,
                    length=len(payload),
                    mrn=row["mrn"],
                )
            )
            later += [
                (row["reference"], SourceError(u["where"], u["message"])) for u in row["unreadable"]
            ]
    later.sort(key=lambda item: item[0])  # in patient order, whatever the partitions
    errors = (errors + [e for _, e in later])[:MAX_ERRORS_KEPT]
    error_count += len(later)
    summaries.sort(key=Summary.key)
    log.info(
        "spark screen: %d patients, %d resources, %d errors", len(summaries), resources, error_count
    )
    return ScreenRun(
        context.trial,
        context.terms,
        context.as_of,
        summaries,
        int(resources),
        errors,
        error_count,
        spool,
        tmp,
    )
