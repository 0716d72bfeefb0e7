"""The sweep store on the real PostgreSQL (127.0.0.1:5432, database `test`).

Each test gets its own schema (search_path in the URL) and drops it afterwards, so these
tests never meet the audit tests' tables or each other's runs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import IntegrityError

from service.sweeps import SweepConflict, SweepRunner, SweepStore
from service.sweeps.report import diff_runs, fhir_bundle, ranked_json
from service.sweeps.store import RUNS, VERSION_TABLE
from tests.db.legacy_schema import HEAD, schema_differences
from tests.sweeps.conftest import AS_OF, TRIAL, set_observation_value, sweep, sweep_settings
from tests.sweeps.test_crash import crash_and_recover
from tests.sweeps.test_store import SPEC

pytestmark = pytest.mark.integration
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"sweeps_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SweepStore]:
    store = SweepStore(pg_url)
    yield store
    store.close()


def test_migrations_apply_on_postgresql(pg_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:  # four processes starting at once against a fresh database
        start.wait()
        try:
            SweepStore(pg_url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = SweepStore(pg_url)
    try:
        assert schema_differences(store.engine) == []
        with store.engine.connect() as conn:
            assert conn.scalar(text(f"select version_num from {VERSION_TABLE}")) == HEAD  # noqa: S608
            index = conn.scalar(
                text(
                    "select indexdef from pg_indexes where indexname = 'ix_sweep_runs_one_running'"
                    " and schemaname = current_schema()"
                )
            )
        assert "UNIQUE INDEX" in index
        assert "WHERE ((status)::text = 'running'::text)" in index
    finally:
        store.close()


def test_postgresql_refuses_a_second_running_run(pg_store: SweepStore) -> None:
    pg_store.claim(SPEC, stale_after_s=60)
    with pytest.raises(IntegrityError), pg_store.engine.begin() as conn:
        conn.execute(
            insert(RUNS).values(
                trial_id=TRIAL,
                trial_version="1",
                terminology_version="t",
                as_of=AS_OF,
                source_kind="files",
                source="/x",
                status="running",
                requested_by="raw sql",
                started_at=text("now()"),
                heartbeat_at=text("now()"),
                pid=1,
                host="elsewhere",
                criteria=[],
            )
        )


def test_racing_claims_on_postgresql_give_exactly_one_run(pg_store: SweepStore) -> None:
    start = threading.Barrier(8)
    won: list[int] = []
    lost: list[str] = []

    def claim() -> None:
        start.wait()
        try:
            won.append(pg_store.claim(SPEC, stale_after_s=60))
        except SweepConflict as exc:
            lost.append(exc.message)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(won), len(lost)) == (1, 7)


def test_sweeps_diff_and_exports_on_postgresql(
    pg_url: str, pg_store: SweepStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import shutil

    from tests.sweeps.conftest import DEMO

    data = tmp_path_factory.mktemp("pg") / "population"
    shutil.copytree(DEMO, data)
    runner = SweepRunner(sweep_settings(pg_url), pg_store)
    first = sweep(runner, data)
    set_observation_value(data, "p01-", "p01-o18", 50.0)
    second = sweep(runner, data)
    diff = diff_runs(pg_store, first, second)
    assert [c.patient for c in diff.dropped] == ["Patient/p01"]
    assert diff.counts["unchanged"] == 70
    assert b'"rank":50' in b"".join(ranked_json(pg_store, second))
    assert len(fhir_bundle(pg_store, second)["entry"]) == 2 + 34


@pytest.mark.parametrize("where", ["store", "screen"])
def test_sigkill_mid_sweep_on_postgresql(pg_url: str, where: str) -> None:
    crash_and_recover(pg_url, where)


def test_an_incremental_sweep_from_the_fhir_server_on_postgresql(
    pg_url: str, fhir_server: str, tmp_path: Path
) -> None:
    """The snapshot's transactionTime must survive PostgreSQL's timestamptz round trip for
    the next run to start from it."""
    from service.sweeps import Source

    settings = sweep_settings(pg_url, fhir_base_url=fhir_server, sweep_snapshot_dir=tmp_path)
    store = SweepStore(pg_url)
    try:
        runner = SweepRunner(settings, store)
        first = runner.sweep(TRIAL, AS_OF, Source.fhir(fhir_server), "test")
        second = runner.sweep(TRIAL, AS_OF, Source.fhir(fhir_server), "test")
        assert (first.mode, second.mode, second.based_on) == ("full", "incremental", first.id)
        assert (second.changes or {})["read"] == 0
        assert diff_runs(store, first, second).counts["unchanged"] == 71
    finally:
        store.close()
