"""A sweep in its own process whose worker processes stall reading, for the killed-sweep test
(the test SIGKILLs this process while its workers run). Not a test module: run as

    python -m tests.sweeps.orphan_sweep DATABASE_URL DATA_DIR SPOOL_DIR
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from service import screening
from service.sweeps import Source, SweepRunner, SweepStore
from tests.sweeps.conftest import TRIAL, sweep_settings

route_chunk = screening._route_chunk


def stalled_route_chunk(*args: Any) -> Any:
    """The workers' first stage, after a minute: long enough to be killed mid-way."""
    time.sleep(60)
    return route_chunk(*args)


def main(url: str, data: str, spool_dir: str) -> None:
    settings = sweep_settings(url, sweep_workers=2, spool_dir=spool_dir)
    screening._route_chunk = stalled_route_chunk  # type: ignore[assignment]  # workers fork
    run = SweepRunner(settings, SweepStore(url)).sweep(
        TRIAL, date(2026, 11, 20), Source.files(Path(data)), "orphan"
    )
    print(run.id, run.status, flush=True)  # noqa: T201 - the parent test reads it


if __name__ == "__main__":
    main(*sys.argv[1:4])
