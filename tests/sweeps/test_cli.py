"""The sweep commands as a coordinator runs them: sweep, runs, diff, export; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings
from service.sweeps import Source, SweepRunner, SweepStore
from tests.sweeps.conftest import AS_OF, DEMO, TRIAL, set_observation_value, sweep_settings

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _database(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("COHORT_MATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("COHORT_MATCH_SWEEP_BATCH_SIZE", "9")
    get_settings.cache_clear()


def _sweep(*args: str) -> str:
    result = runner.invoke(app, ["sweep", "--trial", TRIAL, "--as-of", "2026-11-20", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_sweep_prints_counts_funnel_and_the_change_since_last_time(demo_copy: Path) -> None:
    first = _sweep("--data", str(demo_copy))
    assert "Attrition, run 1 (71 patients)" in first
    assert "I6.hgb" in first
    assert "E14*" in first
    assert "1 patient(s) excluded before the criteria" in first
    assert "35 of 71 patients fail no criterion: 17 likely eligible, 18 possibly eligible" in first
    assert "Run 1 of NCT06946485 (v2026-12-03.1" in first
    assert "17 likely eligible, 18 possibly eligible, 36 ineligible" in first
    assert "Since run" not in first

    set_observation_value(demo_copy, "p01-", "p01-o18", 50.0)
    second = _sweep("--data", str(demo_copy))
    assert "Since run 1 (2026-11-20): 0 new candidate(s), 1 dropped out" in second

    diff = runner.invoke(app, ["diff", "1", "2", "--format", "json"])
    assert diff.exit_code == 0, diff.output
    body = json.loads(diff.stdout)
    assert [c["patient"] for c in body["dropped"]] == ["Patient/p01"]
    assert body["dropped"][0]["criteria"] == [{"id": "I6.hgb", "before": "pass", "after": "fail"}]
    table = runner.invoke(app, ["diff", "1", "2"])
    assert table.exit_code == 0
    assert "Patient/p01" in table.stdout
    assert "I6.hgb pass->fail" in table.stdout
    assert "0 new candidate(s), 1 dropped out" in table.stdout


def test_sweep_without_a_source_sweeps_the_bundled_demo() -> None:
    out = _sweep()
    assert "71 patients from 2361 resources" in out


def test_runs_lists_newest_first_as_table_or_json() -> None:
    _sweep("--data", str(DEMO))
    _sweep("--data", str(DEMO))
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0
    assert "completed" in table.stdout
    assert "17/18/36" in table.stdout
    listed = json.loads(runner.invoke(app, ["runs", "--format", "json"]).stdout)["runs"]
    assert [r["id"] for r in listed] == [2, 1]
    assert listed[0]["status"] == "completed"
    assert listed[0]["counts"]["patients"] == 71
    assert listed[0]["requested_by"].startswith("cli")
    assert json.loads(runner.invoke(app, ["runs", "--trial", "X", "--format", "json"]).stdout) == {
        "runs": []
    }


def test_export_csv_equals_screen_csv_and_fhir_is_a_bundle() -> None:
    _sweep("--data", str(DEMO))
    exported = runner.invoke(app, ["export", "1", "--format", "csv"])
    screened = runner.invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "csv"])
    assert exported.exit_code == 0
    assert exported.stdout == screened.stdout
    bundle = json.loads(runner.invoke(app, ["export", "1", "--format", "fhir"]).stdout)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["title"].startswith("Universal anti-CD70 CAR-T")
    ranked = json.loads(runner.invoke(app, ["export", "1"]).stdout)
    assert ranked["counts"]["patients"] == len(ranked["candidates"]) == 71


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--trial", "NCT0"], "error: unknown trial 'NCT0'"),
        (["sweep", "--data", "/nonexistent"], "error: no such file or directory: /nonexistent"),
        (["sweep", "--source", "http://x", "--data", "."], "error: give --source or --data"),
        (["sweep", "--source", "file:///etc"], "error: --source must be a FHIR base URL"),
        (["sweep", "--as-of", "20-11-2026"], "error: --as-of must be a date"),
        (["export", "7"], "error: no sweep run 7"),
        (["diff", "1", "7"], "error: no sweep run 1"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_sweep_while_one_runs_is_refused(db_url: str) -> None:
    store = SweepStore(db_url)
    try:
        running = SweepRunner(sweep_settings(db_url), store).begin(
            TRIAL, AS_OF, Source.files(DEMO), "someone"
        )
        result = runner.invoke(app, ["sweep", "--data", str(DEMO)])
        assert result.exit_code == 2
        assert f"already running (run {running}" in result.stderr
        store.finish(running, "cancelled", "test over")
        failed = runner.invoke(app, ["export", str(running)])
        assert failed.exit_code == 2
        assert f"error: run {running} is cancelled" in failed.stderr
    finally:
        store.close()


def test_an_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "COHORT_MATCH_DATABASE_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:9/none"
    )
    get_settings.cache_clear()
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: cannot open the sweep store postgresql+psycopg://nobody:***@127.0.0.1:9/none"
    )
    assert "secret" not in result.stderr


def test_diff_keeps_patients_with_an_open_decision_apart(demo_copy: Path, db_url: str) -> None:
    import datetime as dt

    from service.worklist import Decision
    from service.worklist.store import DecisionStore

    set_observation_value(demo_copy, "p01-", "p01-o18", 50.0)
    _sweep("--data", str(demo_copy))
    store = SweepStore(db_url)
    try:
        DecisionStore(store.engine).record(
            Decision(
                trial_id=TRIAL,
                patient="Patient/p01",
                state="to_review",
                subject="coordinator-7",
                at=dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
            )
        )
    finally:
        store.close()
    set_observation_value(demo_copy, "p01-", "p01-o18", 118.0)
    second = _sweep("--data", str(demo_copy))
    assert "Since run 1 (2026-11-20): 0 new candidate(s)" in second
    assert "1 with an open decision" in second
    body = json.loads(runner.invoke(app, ["diff", "1", "2", "--format", "json"]).stdout)
    assert body["new"] == []
    assert [(c["patient"], c["decision"]) for c in body["decided"]] == [
        ("Patient/p01", "to_review")
    ]
    table = runner.invoke(app, ["diff", "1", "2"]).stdout
    assert "decided (to_review)" in table
    assert "1 held by an open decision" in table
