"""The diff with the coordinator's decisions: an open decision keeps a would-be new candidate
apart (`decided`); a declined or screen-failed patient whose record changed in their favour,
and a not-now patient whose date came, are new again."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from service.sweeps import SweepRunner, SweepStore
from service.sweeps.report import diff_runs
from service.sweeps.store import RunInfo
from service.worklist.model import Decision, DecisionState
from tests.sweeps.conftest import AS_OF, DEMO, TRIAL, set_observation_value, sweep, sweep_settings

P01 = "Patient/p01"
NANJING = dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class Runs:
    store: SweepStore
    low: RunInfo  # p01's hemoglobin 50 g/L: ineligible on I6.hgb
    restored: RunInfo  # 118 g/L: likely eligible, a new candidate
    later: RunInfo  # the same record ten days on


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("diff-decisions")
    data = root / "population"
    shutil.copytree(DEMO, data)
    store = SweepStore(f"sqlite:///{root / 'sweeps.db'}")
    runner = SweepRunner(sweep_settings(f"sqlite:///{root / 'sweeps.db'}"), store)
    try:
        set_observation_value(data, "p01-", "p01-o18", 50.0)
        low = sweep(runner, data)
        set_observation_value(data, "p01-", "p01-o18", 118.0)
        restored = sweep(runner, data)
        later = sweep(runner, data, AS_OF + dt.timedelta(days=10))
        yield Runs(store, low, restored, later)
    finally:
        store.close()


def decided(state: DecisionState, **fields: object) -> dict[str, list[Decision]]:
    at = dt.datetime(2026, 11, 20, 9, 0, tzinfo=NANJING)
    values: dict[str, object] = {
        "trial_id": TRIAL,
        "patient": P01,
        "state": state,
        "subject": "coordinator-7",
        "at": at,
    }
    values.update(fields)
    return {P01: [Decision(**values)]}  # type: ignore[arg-type]


def test_without_decisions_the_diff_is_as_before(runs: Runs) -> None:
    diff = diff_runs(runs.store, runs.low, runs.restored)
    assert [c.patient for c in diff.new] == [P01]
    assert diff.new[0].decision is None
    assert diff.decided == []
    assert "decided" not in diff.counts


@pytest.mark.parametrize(
    ("state", "fields"),
    [
        ("to_review", {}),
        ("contacted", {}),
        ("enrolled", {}),
        ("not_now", {"until": AS_OF + dt.timedelta(days=30)}),
    ],
)
def test_a_would_be_new_candidate_with_an_open_decision_is_kept_apart(
    runs: Runs, state: DecisionState, fields: dict[str, object]
) -> None:
    diff = diff_runs(runs.store, runs.low, runs.restored, decided(state, **fields))
    assert diff.new == []
    (kept,) = diff.decided
    assert (kept.patient, kept.change, kept.decision) == (P01, "decided", state)
    assert (kept.before, kept.after) == ("ineligible", "likely_eligible")
    assert [(c.id, c.before, c.after) for c in kept.criteria] == [("I6.hgb", "fail", "pass")]
    assert (diff.counts["new"], diff.counts["decided"]) == (0, 1)


@pytest.mark.parametrize(
    ("state", "fields"),
    [("declined", {}), ("screen_failed", {"criterion": "I6.hgb", "note": "Hb 50 g/L"})],
)
def test_declined_or_screen_failed_come_back_as_new_when_a_failed_criterion_passes(
    runs: Runs, state: DecisionState, fields: dict[str, object]
) -> None:
    diff = diff_runs(runs.store, runs.low, runs.restored, decided(state, **fields))
    (back,) = diff.new
    assert (back.patient, back.change, back.decision) == (P01, "new", state)
    assert diff.decided == []


def test_declined_while_nothing_relevant_changed_stays_out_of_new(runs: Runs) -> None:
    # p01 was already likely eligible in `restored`: ten days on, no criterion came to pass.
    diff = diff_runs(runs.store, runs.restored, runs.later, decided("declined"))
    assert P01 not in {c.patient for c in diff.new}


def test_not_now_comes_back_as_new_in_the_run_its_date_falls_in(runs: Runs) -> None:
    between = decided("not_now", until=AS_OF + dt.timedelta(days=5))
    diff = diff_runs(runs.store, runs.restored, runs.later, between)
    (back,) = [c for c in diff.new if c.patient == P01]
    assert (back.change, back.decision, back.after) == ("new", "not_now", "likely_eligible")
    # Its date had come by the earlier run already: it came back then, not again now.
    lapsed = decided("not_now", until=AS_OF)
    again = diff_runs(runs.store, runs.restored, runs.later, lapsed)
    assert P01 not in {c.patient for c in again.new}


def test_a_decisions_basis_is_the_patients_result_in_the_newest_completed_run(
    runs: Runs,
) -> None:
    found = runs.store.latest_result(TRIAL, P01)
    assert found is not None
    newest = next(r for r in runs.store.summaries(runs.later.id) if r.patient == P01)
    assert (found.status, found.verdicts) == (newest.status, newest.verdicts)
    assert runs.store.latest_result(TRIAL, "Patient/nobody") is None
    assert runs.store.latest_result("NCT00000000", P01) is None
