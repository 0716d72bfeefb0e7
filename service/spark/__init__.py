"""The screen on Apache Spark: the same `screen_patient`, for populations past one machine.

    spark_screen(data, trial_path, terminology_root, as_of, ...) -> ScreenRun

reads Bulk Data NDJSON (any path Spark reads: local, HDFS, object stores) and Parquet tables
holding one resource's JSON per row, routes each line with the single-machine screen's router
(service/routing.py), groups by patient (`groupByKey`), screens each patient with
`screen_patient` in `mapPartitions`, and writes the results as Parquet. The driver then
streams the Parquet into a local spool, so the result is a `ScreenRun` like the
single-machine screen's: the JSON/CSV writers, `sweep --engine spark` and the run store take
it as they are. `python -m service.spark` (or `spark-submit` of its `__main__.py`) is the job
on its own. pyspark is an optional extra (`pip install 'cohort-match[spark]'`); this package
imports it only when called.
"""

from __future__ import annotations

from service.spark.job import SparkInput, spark_screen

__all__ = ["SparkInput", "spark_screen"]
