"""A sweep SIGKILLed mid-way leaves the store consistent, and the next sweep completes.

`crash_and_recover` is shared with the PostgreSQL variant (tests/integration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.sweeps import RunNotReady, Source, SweepConflict, SweepRunner, SweepStore
from service.sweeps.store import RESULTS
from tests.conftest import ROOT
from tests.sweeps.conftest import AS_OF, DEMO, TRIAL, sweep, sweep_settings


def _wait_for(store: SweepStore, condition: str, proc: subprocess.Popen[bytes]) -> int:
    """The slow sweep's run id once it is running and `condition` holds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        runs = [r for r in store.runs(TRIAL) if r.status == "running"]
        if runs and (condition == "claimed" or runs[0].stored >= 10):
            return runs[0].id
        time.sleep(0.05)
    raise AssertionError(f"the slow sweep never got to {condition!r}")


def crash_and_recover(url: str, where: str) -> None:
    store = SweepStore(url)
    try:
        runner = SweepRunner(sweep_settings(url), store)
        with subprocess.Popen(
            [sys.executable, "-m", "tests.sweeps.slow_sweep", url, str(DEMO), where],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as proc:
            try:
                killed = _wait_for(store, "claimed" if where == "screen" else "stored", proc)
                # While it runs, no other sweep of the trial may start.
                with pytest.raises(SweepConflict, match=f"already running \\(run {killed}"):
                    runner.sweep(TRIAL, AS_OF, Source.files(DEMO), "test")
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

        # The killed run: still `running`, never `completed`, its results not served.
        run = store.get(killed)
        assert run.status == "running"
        assert run.ended_at is None
        with store.engine.connect() as conn:
            stored = conn.scalar(
                select(func.count()).select_from(RESULTS).where(RESULTS.c.run_id == killed)
            )
        assert stored == run.stored
        assert (stored == 0) if where == "screen" else (10 <= stored < 71)
        assert [r.id for r in store.runs(TRIAL) if r.status == "completed"] == []
        with pytest.raises(RunNotReady):
            store.with_results(killed)

        # The next sweep finds the process gone, fails the run, and completes.
        after = sweep(runner)
        dead = store.get(killed)
        assert dead.status == "failed"
        assert dead.error is not None
        assert "is gone" in dead.error
        assert store.count_results(killed) == 0
        assert store.count_results(after.id) == 71
        assert after.counts["patients"] == 71
    finally:
        store.close()


@pytest.mark.parametrize("where", ["store", "screen"])
def test_sigkill_mid_sweep_leaves_the_store_consistent(tmp_path: Path, where: str) -> None:
    crash_and_recover(f"sqlite:///{tmp_path / 'crash.db'}", where)


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_sweep_leaves_no_workers_and_its_spool_is_removed_by_the_next(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    spools = tmp_path / "spools"
    with subprocess.Popen(
        [sys.executable, "-m", "tests.sweeps.orphan_sweep", url, str(DEMO), str(spools)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            workers: set[int] = set()
            while time.monotonic() < deadline and len(workers) < 2:
                assert proc.poll() is None, proc.communicate()
                workers = _children(proc.pid)
                time.sleep(0.05)
            assert len(workers) >= 2, "the sweep never started its workers"
            (spool,) = spools.iterdir()
            # Owner-only, under the configured directory, named with the sweep's pid.
            assert spool.name.startswith(f"cohort-match-sweep-{proc.pid}-")
            assert spool.stat().st_mode & 0o777 == 0o700
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(w) for w in workers):
        time.sleep(0.1)
    assert not any(_running(w) for w in workers), "workers outlived the killed sweep"
    assert spool.exists()  # SIGKILL leaves it; the next sweep removes it

    store = SweepStore(url)
    try:
        runner = SweepRunner(sweep_settings(url, spool_dir=spools), store)
        run = sweep(runner)
        assert run.counts["patients"] == 71
    finally:
        store.close()
    assert list(spools.iterdir()) == []  # the stale spool and the completed run's own
