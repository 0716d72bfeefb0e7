"""The multi-trial card (service/cds/all_trials.py): pure, from EveryTrial rows."""

from __future__ import annotations

from service.all_trials import EveryTrial, TrialFit
from service.cds.all_trials import all_trials_card
from service.criteria.verdict import PatientResult, PatientSummary, Status, TrialRef
from tests.conftest import AS_OF, load_trials


def _every(*rows: tuple[str, Status, str | None]) -> EveryTrial:
    trials = load_trials()
    fits = [
        TrialFit(tid, trials[tid].title, "v", status, 0.5, 0, step, rank)
        for rank, (tid, status, step) in enumerate(rows, start=1)
    ]
    results = {
        tid: PatientResult(
            TrialRef(tid, "v", "t"),
            PatientSummary("Patient/x", 40, "female"),
            AS_OF,
            status,
            0.5,
            [],
            [],
        )
        for tid, status, _ in rows
    }
    return EveryTrial(fits, results)


def test_only_possibly_eligible_is_info_and_the_ruled_out_are_counted() -> None:
    every = _every(
        ("NCT06421701", "possibly_eligible", "I7.plt: Order a *complete* blood count."),
        ("NCT06946485", "ineligible", "fails I6.hgb: Hemoglobin 58 g/L on 2026-11-10"),
    )
    card = all_trials_card(every, load_trials(), card_id="c1", launch_url=None)
    assert card is not None
    assert card.indicator == "info"
    assert card.summary == "May fit 1 clinical trial; best: NCT06421701 (possibly eligible)"
    assert card.detail is not None
    assert "Order a \\*complete\\* blood count." in card.detail  # Markdown shown literally
    assert "Ruled out by the record: 1 of 2 trials served." in card.detail
    assert "fails I6.hgb" not in card.detail  # only the trials the patient may fit are listed
    assert card.links is None  # no SMART launch URL configured


def test_no_card_when_every_trial_rules_the_patient_out() -> None:
    every = _every(("NCT06946485", "ineligible", "fails I2: ..."))
    assert all_trials_card(every, load_trials(), card_id="c1", launch_url=None) is None
