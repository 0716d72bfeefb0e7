"""The run store: migrations, the one-running-sweep guarantee, abandoned runs, purging."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, insert, inspect, text, update
from sqlalchemy.exc import IntegrityError

from service.config import Settings
from service.errors import NotFound
from service.sweeps import RunNotReady, SweepConflict, SweepRunner, SweepStore
from service.sweeps.store import (
    MIGRATIONS,
    RUNS,
    VERSION_TABLE,
    RunSpec,
    abandoned_reason,
    process_alive,
)
from tests.db.legacy_schema import HEAD
from tests.db.legacy_schema import schema_differences as db_schema_differences
from tests.sweeps.conftest import AS_OF, TRIAL, sweep

SPEC = RunSpec(
    trial_id=TRIAL,
    trial_version="1",
    terminology_version="t",
    as_of=AS_OF,
    source_kind="files",
    source="/data",
    requested_by="test",
    criteria=[{"id": "I1", "kind": "inclusion", "assessment": "automatic", "text": "x"}],
)


def schema_differences(store: SweepStore) -> list[object]:
    return db_schema_differences(store.engine)


def test_migrations_create_the_schema_the_models_describe(store: SweepStore) -> None:
    assert schema_differences(store) == []
    tables = set(inspect(store.engine).get_table_names())
    assert {"sweep_runs", "sweep_results", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # never collides with another component's
    with store.engine.connect() as conn:
        assert conn.scalar(text(f"select version_num from {VERSION_TABLE}")) == HEAD  # noqa: S608
        index = conn.scalar(
            text("select sql from sqlite_master where name = 'ix_sweep_runs_one_running'")
        )
    assert "UNIQUE" in index
    assert "WHERE status = 'running'" in index


def test_a_database_of_the_first_schema_is_upgraded_and_keeps_its_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "insert into sweep_runs (trial_id, trial_version, terminology_version, as_of, "
                "source_kind, source, status, requested_by, started_at, heartbeat_at, pid, host, "
                "cancel_requested, stage, done, total, stored, patients, likely_eligible, "
                "possibly_eligible, ineligible, resources, errors, criteria, results_purged) "
                "values ('NCT06946485', '1', 't', '2026-11-20', 'files', '/data', 'completed', "
                "'old', '2026-11-20 08:00:00', '2026-11-20 08:00:00', 1, 'h', 0, 'done', 0, 0, "
                "0, 0, 0, 0, 0, 0, 0, '[]', 0)"
            )
        )
    engine.dispose()
    store = SweepStore(url)
    try:
        assert schema_differences(store) == []
        (old,) = store.runs()
        assert (old.requested_by, old.status, old.mode, old.based_on) == (
            "old",
            "completed",
            None,
            None,
        )
    finally:
        store.close()


def test_migrating_again_and_concurrently_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        try:
            SweepStore(url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    again = SweepStore(url)
    assert schema_differences(again) == []
    again.close()


def test_the_database_refuses_a_second_running_run_of_a_trial(store: SweepStore) -> None:
    store.claim(SPEC, stale_after_s=60)
    now = dt.datetime.now(dt.UTC)
    row = {
        "trial_id": TRIAL,
        "trial_version": "1",
        "terminology_version": "t",
        "as_of": AS_OF,
        "source_kind": "files",
        "source": "/x",
        "status": "running",
        "requested_by": "raw sql",
        "started_at": now,
        "heartbeat_at": now,
        "pid": 1,
        "host": "elsewhere",
        "criteria": [],
    }
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(RUNS).values(**row))
    # ... while other trials, and finished runs of this one, are fine
    with store.engine.begin() as conn:
        conn.execute(insert(RUNS).values(**{**row, "trial_id": "OTHER"}))
        conn.execute(insert(RUNS).values(**{**row, "status": "failed"}))


def test_a_live_run_blocks_a_claim(store: SweepStore) -> None:
    first = store.claim(SPEC, stale_after_s=60)
    with pytest.raises(
        SweepConflict, match=f"already running \\(run {first}, process {os.getpid()}"
    ):
        store.claim(SPEC, stale_after_s=60)
    assert store.get(first).status == "running"


def test_claims_racing_from_many_threads_give_exactly_one_run(store: SweepStore) -> None:
    start = threading.Barrier(8)
    won: list[int] = []
    lost: list[str] = []

    def claim() -> None:
        start.wait()
        try:
            won.append(store.claim(SPEC, stale_after_s=60))
        except SweepConflict as exc:
            lost.append(exc.message)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert len(lost) == 7
    assert [r.id for r in store.runs(TRIAL) if r.status == "running"] == won


def _set(store: SweepStore, run_id: int, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))


def test_a_run_whose_process_is_gone_is_marked_failed_by_the_next_claim(
    store: SweepStore,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = store.claim(SPEC, stale_after_s=3600)
    _set(store, dead, pid=child.pid)
    fresh = store.claim(SPEC, stale_after_s=3600)
    old = store.get(dead)
    assert old.status == "failed"
    assert old.error == f"abandoned: process {child.pid} on {socket.gethostname()} is gone"
    assert old.ended_at is not None
    assert store.get(fresh).status == "running"


def test_a_silent_run_on_another_host_is_failed_only_after_the_stale_time(
    store: SweepStore,
) -> None:
    other = store.claim(SPEC, stale_after_s=60)
    quiet = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    _set(store, other, host="another-host", pid=1, heartbeat_at=quiet)
    with pytest.raises(SweepConflict):
        store.claim(SPEC, stale_after_s=60)  # 30 s of silence may be a slow machine
    fresh = store.claim(SPEC, stale_after_s=20)
    assert store.get(other).status == "failed"
    assert "no heartbeat from process 1 on another-host for 3" in (store.get(other).error or "")
    assert store.get(fresh).status == "running"


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while dt.datetime.now() < deadline:  # exited but not reaped: still answers kill(0)
            state = Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
        assert not process_alive(zombie.pid)
    finally:
        zombie.wait()


def test_heartbeat_reports_cancel_and_loss(store: SweepStore) -> None:
    run_id = store.claim(SPEC, stale_after_s=60)
    assert store.heartbeat(run_id, "read", 1, 3) == "running"
    assert (store.get(run_id).stage, store.get(run_id).done, store.get(run_id).total) == (
        "read",
        1,
        3,
    )
    store.request_cancel(run_id)
    assert store.heartbeat(run_id) == "cancel"
    assert store.finish(run_id, "failed", "taken over")
    assert store.heartbeat(run_id) == "lost"
    assert not store.finish(run_id, "cancelled", "too late")  # the first end stands
    assert store.get(run_id).status == "failed"


def test_abandoned_reason_is_none_for_a_live_local_run(store: SweepStore) -> None:
    run = store.get(store.claim(SPEC, stale_after_s=60))
    assert abandoned_reason(run, dt.datetime.now(dt.UTC), 60) is None


def test_only_the_newest_runs_keep_results(tmp_path: Path, demo_copy: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'keep.db'}", sweep_keep_results=2)
    store = SweepStore(settings.database_url)
    try:
        runner = SweepRunner(settings, store)
        first, second, third = (sweep(runner, demo_copy) for _ in range(3))
        assert store.get(first.id).results_purged
        assert store.count_results(first.id) == 0
        assert [store.count_results(r.id) for r in (second, third)] == [71, 71]
        with pytest.raises(RunNotReady, match="were removed"):
            store.with_results(first.id)
        assert store.get(first.id).attrition is not None  # the funnel and counts stay
    finally:
        store.close()


@pytest.mark.parametrize("run_id", [0, -1, 2**31, 9223372036854775808])
def test_a_run_id_past_the_column_range_is_not_found_not_an_overflow(
    store: SweepStore, run_id: int
) -> None:
    with pytest.raises(NotFound, match=f"no sweep run {run_id}"):
        store.get(run_id)
