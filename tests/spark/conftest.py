"""One local[2] SparkSession for every Spark test (a JVM takes seconds to start).

These tests start a JVM and Python workers: the folder is marked `integration` (tests/
conftest.py), so scripts/check runs them in its second pass, one process, in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# The JVM lives for a few short jobs: the C1 compiler alone and the serial collector start
# faster than the server defaults (session plus three screens of 30 patients: ~50 s against
# ~70 s, measured on 2 shared cores). Only where nothing else chose the options.
TEST_JVM = '--driver-java-options "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" pyspark-shell'


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from service.spark.job import session

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_SUBMIT_ARGS", os.environ.get("PYSPARK_SUBMIT_ARGS", TEST_JVM))
        spark = session("local[2]", app="cohort-match-tests")
        spark.sparkContext.setLogLevel("ERROR")
        yield spark
        spark.stop()
