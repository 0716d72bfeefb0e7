"""One local[2] SparkSession for every Spark test (a JVM takes seconds to start).

These tests start a JVM and Python workers: the folder is marked `integration` (tests/
conftest.py), so scripts/check runs them in its second pass, one process, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from service.spark.job import session

    spark = session("local[2]", app="cohort-match-tests")
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
