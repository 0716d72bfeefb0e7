"""A sweep in its own process that stores results slowly, for the crash tests (a test
SIGKILLs it mid-way). Not a test module: run as

    python -m tests.sweeps.slow_sweep DATABASE_URL DATA_DIR {store|screen}

`store`: each batch of results is followed by a pause; `screen`: the pause comes before
screening, so the process dies before any result is stored.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from service.sweeps import Source, SweepRunner, SweepStore, runner
from tests.sweeps.conftest import TRIAL, sweep_settings

PAUSE_S = 0.25


def main(url: str, data: str, where: str) -> None:
    settings = sweep_settings(url, sweep_batch_size=5)
    store = SweepStore(url)
    if where == "store":
        add = SweepStore.add_results

        def slow_add(self: SweepStore, *args: Any, **kwargs: Any) -> None:
            add(self, *args, **kwargs)
            time.sleep(PAUSE_S)

        SweepStore.add_results = slow_add  # type: ignore[method-assign]
    else:
        screen = runner.screen

        def slow_screen(*args: Any, **kwargs: Any) -> Any:
            time.sleep(60)
            return screen(*args, **kwargs)

        runner.screen = slow_screen  # type: ignore[assignment]
    run = SweepRunner(settings, store).sweep(
        TRIAL, date(2026, 11, 20), Source.files(Path(data)), "slow"
    )
    print(run.id, run.status, flush=True)  # noqa: T201 - the parent test reads it


if __name__ == "__main__":
    main(*sys.argv[1:4])
