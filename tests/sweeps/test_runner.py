"""A sweep of the demo population end to end, and how runs end: completed, failed,
cancelled, taken over."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.config import Settings
from service.errors import BadRequest, NotFound
from service.screening import screen
from service.sweeps import BackgroundSweeps, Source, SweepConflict, SweepRunner, SweepStore
from service.sweeps.report import diff_runs
from service.sweeps.runner import configured_source
from tests.conftest import ROOT, TRIAL_PATH
from tests.sweeps.conftest import AS_OF, DEMO, TRIAL, set_observation_value, sweep, sweep_settings


def test_a_sweep_stores_every_result_of_the_screen_in_rank_order(
    runner: SweepRunner, store: SweepStore
) -> None:
    stages: list[str] = []
    run = runner.sweep(
        TRIAL, AS_OF, Source.files(DEMO), "test", progress=lambda s, d, t: stages.append(s)
    )
    assert run.status == "completed", run.error
    expected = screen(DEMO, TRIAL_PATH, ROOT / "terminology", AS_OF)
    try:
        assert run.counts == expected.counts()
        stored = [orjson.loads(body) for body in store.results(run.id)]
        assert stored == list(expected.results())  # the full results, evidence and rank
        assert [s.patient for s in store.summaries(run.id)] == [
            s.reference for s in expected.summaries
        ]
    finally:
        expected.close()
    assert run.trial_version == "2026-12-03.1"
    assert run.terminology_version == runner.terms().version
    assert run.source == str(DEMO.resolve())
    assert run.source_kind == "files"
    assert run.requested_by == "test"
    assert run.ended_at is not None
    assert run.ended_at >= run.started_at
    assert (run.stage, run.done, run.total, run.stored) == ("done", 71, 71, 71)
    assert len(run.problems) == 4
    assert "p41" in " ".join(run.problems)
    assert [c["id"] for c in run.criteria][:3] == ["I1", "I2", "I3"]
    assert {"read", "evaluate", "store"} <= set(stages)


def test_a_second_sweep_after_one_patient_changed_shows_exactly_that_patient(
    runner: SweepRunner, store: SweepStore, demo_copy: Path
) -> None:
    first = sweep(runner, demo_copy)
    set_observation_value(demo_copy, "p01-", "p01-o18", 50.0)  # hemoglobin 118 -> 50 g/L
    second = sweep(runner, demo_copy)
    diff = diff_runs(store, first, second)
    assert diff.counts == {
        "new": 0,
        "dropped": 1,
        "status": 0,
        "verdicts": 0,
        "arrived": 0,
        "left": 0,
        "unchanged": 70,
    }
    (dropped,) = diff.dropped
    assert dropped.patient == "Patient/p01"
    assert (dropped.before, dropped.after) == ("likely_eligible", "ineligible")
    assert [(c.id, c.before, c.after) for c in dropped.criteria] == [("I6.hgb", "pass", "fail")]
    assert dropped.rank_before == 1
    assert dropped.rank_after is not None
    assert diff.notes == []

    set_observation_value(demo_copy, "p05-", "p05-o18", 65.0)  # 58 -> 65 g/L: now a candidate
    third = sweep(runner, demo_copy)
    diff = diff_runs(store, second, third)
    assert [c.patient for c in diff.new] == ["Patient/p05"]
    assert diff.new[0].before == "ineligible"
    assert diff.new[0].after == "likely_eligible"
    assert [(c.id, c.before, c.after) for c in diff.new[0].criteria] == [("I6.hgb", "fail", "pass")]
    assert diff.counts["dropped"] + diff.counts["status"] + diff.counts["verdicts"] == 0


def test_diff_names_patients_who_appear_or_disappear_and_status_changes(
    runner: SweepRunner, store: SweepStore, demo_copy: Path
) -> None:
    first = sweep(runner, demo_copy)
    next(demo_copy.glob("p02-*.json")).unlink()  # a likely-eligible patient leaves the data
    # p01 loses every hemoglobin on record: I6.hgb unknown, likely -> possibly eligible
    set_observation_value(demo_copy, "p01-", "p01-o18", 50.0)
    path = next(demo_copy.glob("p01-*.json"))
    bundle = orjson.loads(path.read_bytes())
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["id"] != "p01-o18"]
    path.write_bytes(orjson.dumps(bundle))
    second = sweep(runner, demo_copy, as_of=AS_OF.replace(day=21))
    diff = diff_runs(store, first, second)
    assert [(c.patient, c.after) for c in diff.dropped] == [("Patient/p02", None)]
    assert diff.dropped[0].criteria == []
    assert [(c.patient, c.before, c.after) for c in diff.status] == [
        ("Patient/p01", "likely_eligible", "possibly_eligible")
    ]
    assert [(c.id, c.after) for c in diff.status[0].criteria] == [("I6.hgb", "unknown")]
    assert any("as_of moved 2026-11-20 -> 2026-11-21" in note for note in diff.notes)


def test_diff_names_ineligible_patients_new_to_the_population_as_arrived_not_unchanged(
    runner: SweepRunner, store: SweepStore, demo_copy: Path
) -> None:
    # p05 is ineligible in the demo; take it and one likely-eligible patient (p02) out first
    held = {name: next(demo_copy.glob(f"{name}-*.json")) for name in ("p02", "p05")}
    saved = {name: path.read_bytes() for name, path in held.items()}
    for path in held.values():
        path.unlink()
    first = sweep(runner, demo_copy)
    for name, path in held.items():
        path.write_bytes(saved[name])
    next(demo_copy.glob("p07-*.json")).unlink()  # an ineligible patient leaves
    second = sweep(runner, demo_copy)
    diff = diff_runs(store, first, second)
    assert [(c.patient, c.before, c.after) for c in diff.new] == [
        ("Patient/p02", None, "likely_eligible")
    ]
    assert [(c.patient, c.before, c.after) for c in diff.arrived] == [
        ("Patient/p05", None, "ineligible")
    ]
    assert [(c.patient, c.before, c.after) for c in diff.left] == [
        ("Patient/p07", "ineligible", None)
    ]
    assert diff.counts["unchanged"] == 71 - 3
    assert diff.counts["arrived"] == diff.counts["left"] == 1


def test_diff_refuses_runs_of_different_trials_or_not_completed(
    tmp_path: Path, db_url: str
) -> None:
    trials = tmp_path / "trials"
    trials.mkdir()
    shutil.copy(TRIAL_PATH, trials)
    shutil.copy(Path(__file__).parents[1] / "data" / "trials" / "DEMO-LN-001.yaml", trials)
    settings = sweep_settings(db_url, trials_dir=trials)
    store = SweepStore(db_url)
    try:
        runner = SweepRunner(settings, store)
        ours = sweep(runner)
        other = runner.sweep("DEMO-LN-001", AS_OF, Source.files(DEMO), "test")
        with pytest.raises(BadRequest, match="different trials"):
            diff_runs(store, ours, other)
        running = store.get(runner.begin(TRIAL, AS_OF, Source.files(DEMO), "test"))
        with pytest.raises(SweepConflict, match="is running; results are served once"):
            diff_runs(store, ours, running)
    finally:
        store.close()


def test_a_sweep_that_fails_is_recorded_failed_and_keeps_no_results(
    runner: SweepRunner, store: SweepStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(SweepStore, "complete", broken)
    run = runner.sweep(TRIAL, AS_OF, Source.files(DEMO), "test")
    assert run.status == "failed"
    assert run.error == "OSError: disk full"
    assert store.count_results(run.id) == 0  # the batches stored before are discarded
    with pytest.raises(SweepConflict, match="is failed"):
        store.with_results(run.id)


def test_begin_refuses_unknown_trials_and_missing_data(runner: SweepRunner) -> None:
    with pytest.raises(NotFound, match="unknown trial 'NCT0'"):
        runner.begin("NCT0", AS_OF, Source.files(DEMO), "test")
    with pytest.raises(BadRequest, match="no such file"):
        Source.files(DEMO / "nope")
    with pytest.raises(BadRequest, match="http or https"):
        Source.fhir("ftp://x")


def test_the_configured_source_prefers_the_data_dir() -> None:
    assert configured_source(Settings()) is None
    assert configured_source(Settings(fhir_base_url="http://f/fhir/")) == Source(
        "fhir", "http://f/fhir"
    )
    assert configured_source(Settings(fhir_base_url="http://f", sweep_data_dir=DEMO)) == Source(
        "files", str(DEMO.resolve())
    )


def _slow_results(monkeypatch: pytest.MonkeyPatch, pause: float = 0.2) -> threading.Event:
    """Each stored batch pauses; the event is set once the first batch is in."""
    stored = threading.Event()
    add = SweepStore.add_results

    def slow(self: SweepStore, *args: Any, **kwargs: Any) -> None:
        add(self, *args, **kwargs)
        stored.set()
        time.sleep(pause)

    monkeypatch.setattr(SweepStore, "add_results", slow)
    return stored


def test_a_cancel_request_in_the_store_stops_the_run(
    runner: SweepRunner, store: SweepStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = _slow_results(monkeypatch)
    run_id = runner.begin(TRIAL, AS_OF, Source.files(DEMO), "test")
    ended: list[Any] = []
    worker = threading.Thread(target=lambda: ended.append(runner.execute(run_id)))
    worker.start()
    assert stored.wait(20)
    store.request_cancel(run_id)  # as another process would: seen at the next heartbeat
    worker.join(20)
    assert ended[0].status == "cancelled"
    assert ended[0].error == "cancel requested"
    assert store.count_results(run_id) == 0


def test_a_run_taken_over_as_abandoned_stops_without_completing(
    runner: SweepRunner, store: SweepStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = _slow_results(monkeypatch)
    run_id = runner.begin(TRIAL, AS_OF, Source.files(DEMO), "test")
    ended: list[Any] = []
    worker = threading.Thread(target=lambda: ended.append(runner.execute(run_id)))
    worker.start()
    assert stored.wait(20)
    store.finish(run_id, "failed", "abandoned: declared dead by another sweep")
    worker.join(20)
    assert ended[0].status == "failed"
    assert ended[0].error == "abandoned: declared dead by another sweep"
    assert store.count_results(run_id) == 0


def test_background_sweeps_run_on_a_thread_and_cancel_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    background = BackgroundSweeps(settings.model_copy(update={"sweep_data_dir": DEMO}))
    try:
        done = background.wait(background.start(TRIAL, AS_OF, "test").id, timeout=60)
        assert done.status == "completed"
        stored = _slow_results(monkeypatch)
        run = background.start(TRIAL, AS_OF, "test")
        assert stored.wait(20)
        with pytest.raises(SweepConflict):  # a second start while one runs
            background.start(TRIAL, AS_OF, "test")
        assert background.cancel(run.id).cancel_requested
        assert background.wait(run.id, timeout=20).status == "cancelled"
    finally:
        background.close()


def test_background_sweeps_need_a_source(settings: Settings) -> None:
    background = BackgroundSweeps(settings)
    try:
        with pytest.raises(BadRequest, match="no sweep source configured"):
            background.start(TRIAL, AS_OF, "test")
    finally:
        background.close()
