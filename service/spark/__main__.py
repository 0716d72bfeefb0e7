"""The Spark job on its own: `spark-submit` this file (or `python -m service.spark`).

    spark-submit --master yarn service/spark/__main__.py \
        --trial NCT06946485 --data hdfs:///exports/2026-11-27/ --out hdfs:///screens/run-1 \
        --local-out ./run-1 --as-of 2026-11-27

writes the results as Parquet under --out (by the executors), and the ranked list as the
JSON and CSV contract of `cohort-match screen --format json|csv` under --local-out (by the
driver). Trial, code tables and site map default to the configured ones (Settings).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from pathlib import Path

from service.as_of import check_as_of
from service.config import Settings
from service.screening import ScreenOptions, ScreenRun
from service.spark.job import SparkInput, session, spark_screen
from service.trials import find_trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trial", default="NCT06946485", help="trial id (under trials/)")
    parser.add_argument("--data", action="append", required=True, help="file or directory")
    parser.add_argument("--format", choices=("auto", "ndjson", "parquet"), default="auto")
    parser.add_argument("--column", default="resource", help="Parquet column of resource JSON")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--out", required=True, help="where the executors write Parquet")
    parser.add_argument("--local-out", type=Path, required=True, help="results.json/.csv here")
    parser.add_argument("--master", default=None, help="default: as spark-submit says")
    parser.add_argument("--partitions", type=int, default=None)
    args = parser.parse_args(argv)
    settings = Settings()
    _, trial_path = find_trial(settings.trials_dir, args.trial)
    as_of = check_as_of(args.as_of or dt.date.today())
    spark = session(args.master)
    run = spark_screen(
        SparkInput(tuple(args.data), args.format, args.column),
        trial_path,
        settings.terminology_dir,
        as_of,
        options=ScreenOptions(partitions=args.partitions),
        site_map=settings.site_code_map,
        mrn_type=settings.mrn_type,
        spark=spark,
        parquet_out=args.out,
    )
    try:
        write_outputs(run, args.local_out)
        counts = run.counts()
        print(  # noqa: T201 - the job's report, no patient data
            f"{counts['patients']} patients, {counts['resources']} resources, "
            f"{counts['errors']} errors; results in {args.out} and {args.local_out}",
            file=sys.stderr,
        )
        for error in run.errors:
            print(f"  {error}", file=sys.stderr)  # noqa: T201
    finally:
        run.close()
        spark.stop()
    return 0


def write_outputs(run: ScreenRun, out: Path) -> None:
    """results.json and results.csv of `run`, by the CLI's one writer of each format."""
    from service.cli import render

    out.mkdir(parents=True, exist_ok=True)
    for name, write in (("results.json", render.write_json), ("results.csv", render.write_csv)):
        with (out / name).open("w", encoding="utf-8") as handle:
            with contextlib.redirect_stdout(handle):
                write(run)


if __name__ == "__main__":
    sys.exit(main())
