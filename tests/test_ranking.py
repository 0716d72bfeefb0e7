"""Verdicts -> status, score, next steps and order (service/ranking.py)."""

from __future__ import annotations

import itertools

import orjson
import pytest

from service.criteria.model import TrialDefinition
from service.criteria.verdict import (
    CriterionResult,
    PatientResult,
    PatientSummary,
    TrialRef,
    VerdictValue,
)
from service.ranking import (
    failure_text,
    next_step,
    rank,
    rank_fields,
    result_next_step,
    stored_next_step,
)
from tests.conftest import AS_OF


def results(
    trial: TrialDefinition, overrides: dict[str, VerdictValue] | None = None
) -> list[CriterionResult]:
    """One result per criterion: automatic ones pass, manual ones are unknown, unless overridden."""
    overrides = overrides or {}
    out = []
    for criterion in trial.criteria:
        default: VerdictValue = "pass" if criterion.assessment == "automatic" else "unknown"
        verdict = overrides.get(criterion.id, default)
        out.append(
            CriterionResult(
                id=criterion.id,
                kind=criterion.kind,
                assessment=criterion.assessment,
                text=criterion.text,
                verdict=verdict,
                reason=f"{criterion.id} is {verdict}",
                evidence=(),
                check=criterion.check if verdict == "unknown" else None,
            )
        )
    return out


def automatic_cost(trial: TrialDefinition) -> float:
    return sum(c.cost for c in trial.criteria if c.assessment == "automatic")


# ------------------------------------------------------------------ status and score
@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        pytest.param({}, "likely_eligible", id="all-automatic-pass-manual-unknown-likely"),
        pytest.param(
            {"I7.hcg": "not_applicable", "E13": "not_applicable", "I7.lactation": "not_applicable"},
            "likely_eligible",
            id="not-applicable-counts-as-settled-likely",
        ),
        pytest.param(
            {"I6.lvef": "unknown"}, "possibly_eligible", id="one-automatic-unknown-possibly"
        ),
        pytest.param({"I6.hgb": "fail"}, "ineligible", id="one-automatic-fail-ineligible"),
        pytest.param({"I7.hcg": "fail"}, "ineligible", id="manual-fail-ineligible"),
        pytest.param(
            {"I6.hgb": "fail", "I2": "unknown"}, "ineligible", id="fail-beats-unknown-ineligible"
        ),
    ],
)
def test_status(trial: TrialDefinition, overrides: dict[str, VerdictValue], status: str) -> None:
    assert rank_fields(trial, results(trial, overrides))[0] == status


def test_score_is_one_when_nothing_automatic_is_open(trial: TrialDefinition) -> None:
    _, score, _ = rank_fields(trial, results(trial))
    assert score == 1.0


def test_score_is_zero_when_ineligible(trial: TrialDefinition) -> None:
    _, score, _ = rank_fields(trial, results(trial, {"E2": "fail", "I6.lvef": "unknown"}))
    assert score == 0.0


def test_score_is_settled_share_of_automatic_cost(trial: TrialDefinition) -> None:
    _, score, _ = rank_fields(trial, results(trial, {"I6.lvef": "unknown"}))
    lvef = trial.criterion("I6.lvef").cost
    assert score == pytest.approx(1 - lvef / automatic_cost(trial), abs=1e-4)


def test_manual_unknowns_cost_nothing(trial: TrialDefinition) -> None:
    manual_open = {c.id: "unknown" for c in trial.criteria if c.assessment == "manual"}
    _, score, _ = rank_fields(trial, results(trial, manual_open))  # type: ignore[arg-type]
    assert score == 1.0


def test_cheaper_unknown_scores_higher(trial: TrialDefinition) -> None:
    """A chart review (cost 1) left open beats a lab draw (2), which beats imaging (3)."""
    chart = rank_fields(trial, results(trial, {"I2": "unknown"}))[1]
    lab = rank_fields(trial, results(trial, {"I6.hgb": "unknown"}))[1]
    imaging = rank_fields(trial, results(trial, {"I6.lvef": "unknown"}))[1]
    assert chart > lab > imaging


# ------------------------------------------------------------------ next steps
def test_next_steps_cheapest_automatic_first_manual_last(trial: TrialDefinition) -> None:
    open_ = {"I6.lvef": "unknown", "I6.hgb": "unknown", "E3": "unknown"}
    _, _, steps = rank_fields(trial, results(trial, open_))  # type: ignore[arg-type]
    ids = [step.split(":")[0] for step in steps]
    manual = [c.id for c in trial.criteria if c.assessment == "manual"]
    assert ids[:3] == ["E3", "I6.hgb", "I6.lvef"]
    assert sorted(ids[3:]) == sorted(manual)


def test_next_steps_name_the_check_and_the_reason(trial: TrialDefinition) -> None:
    _, _, steps = rank_fields(trial, results(trial, {"I6.lvef": "unknown"}))
    assert steps[0] == f"I6.lvef: {trial.criterion('I6.lvef').check} (I6.lvef is unknown)"


def test_no_next_steps_for_decided_criteria(trial: TrialDefinition) -> None:
    decided = {c.id: "pass" for c in trial.criteria}
    _, _, steps = rank_fields(trial, results(trial, decided))  # type: ignore[arg-type]
    assert steps == []


# ------------------------------------------------------------------ order
def patient(
    trial: TrialDefinition, reference: str, overrides: dict[str, VerdictValue]
) -> PatientResult:
    criteria = results(trial, overrides)
    status, score, steps = rank_fields(trial, criteria)
    return PatientResult(
        trial=TrialRef(trial.id, trial.version, "test"),
        patient=PatientSummary(reference, 40, "female"),
        as_of=AS_OF,
        status=status,
        score=score,
        criteria=criteria,
        next_steps=steps,
    )


def test_rank_orders_by_status_then_score_then_fails_then_reference(
    trial: TrialDefinition,
) -> None:
    population = [
        patient(trial, "Patient/z-likely", {}),
        patient(trial, "Patient/a-likely", {}),
        patient(trial, "Patient/imaging-open", {"I6.lvef": "unknown"}),
        patient(trial, "Patient/chart-open", {"I2": "unknown"}),
        patient(trial, "Patient/one-fail", {"E2": "fail"}),
        patient(trial, "Patient/two-fails", {"E2": "fail", "E5": "fail"}),
    ]
    expected = [
        "Patient/a-likely",
        "Patient/z-likely",
        "Patient/chart-open",
        "Patient/imaging-open",
        "Patient/one-fail",
        "Patient/two-fails",
    ]
    shuffled = [population[i] for i in (4, 2, 0, 5, 3, 1)]
    ordered = rank(shuffled)
    assert [r.patient.reference for r in ordered] == expected
    assert [r.rank for r in ordered] == [1, 2, 3, 4, 5, 6]


def test_rank_is_deterministic_for_any_input_order(trial: TrialDefinition) -> None:
    population = [patient(trial, f"Patient/{n}", {"I6.hgb": "unknown"}) for n in "dbca"]
    orders = set()
    for order in itertools.permutations(population):
        orders.add(tuple(r.patient.reference for r in rank(list(order))))
    assert orders == {("Patient/a", "Patient/b", "Patient/c", "Patient/d")}


# ------------------------------------------------ no candidate whatever the criteria
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="all-pass"),
        pytest.param({"I6.lvef": "unknown"}, id="open-criteria"),
    ],
)
def test_an_excluded_patient_is_ineligible_with_no_next_steps(
    trial: TrialDefinition, overrides: dict[str, VerdictValue]
) -> None:
    status, score, steps = rank_fields(trial, results(trial, overrides), "deceased on 2026-10-01")
    assert (status, score, steps) == ("ineligible", 0.0, [])


def test_without_an_exclusion_the_criteria_decide(trial: TrialDefinition) -> None:
    assert rank_fields(trial, results(trial), None)[0] == "likely_eligible"


# ------------------------------------------------------------------ the next step
def test_failure_text_keeps_a_dated_reason_and_dates_an_undated_one() -> None:
    dated = "Hemoglobin 58 g/L >= 60 g/L on 2026-11-10: not met"
    assert failure_text("I6.hgb", dated, ["2026-11-10"]) == f"I6.hgb: {dated}"
    undated = "Malignant neoplasms (history) on record: Condition/c1"
    assert failure_text("E8", undated, [None, "2019-04-02"]) == f"E8: {undated} (2019-04-02)"
    assert failure_text("E8", undated, []) == f"E8: {undated}"


@pytest.mark.parametrize(
    ("status", "failures", "steps", "reason", "expected"),
    [
        pytest.param(
            "ineligible",
            ["I6.hgb: Hemoglobin 58 g/L >= 60 g/L on 2026-11-10: not met"],
            ["I7.hcg: Serum hCG within 7 days (no result)"],
            None,
            "fails I6.hgb: Hemoglobin 58 g/L >= 60 g/L on 2026-11-10: not met",
            id="ineligible-is-why-never-an-open-check",
        ),
        pytest.param(
            "ineligible",
            ["I6.alt: ALT 165 U/L on 2026-11-10", "I6.ast: AST 150 U/L on 2026-11-10"],
            [],
            None,
            "fails I6.alt: ALT 165 U/L on 2026-11-10; I6.ast: AST 150 U/L on 2026-11-10",
            id="every-failing-criterion-in-protocol-order",
        ),
        pytest.param(
            "ineligible",
            [],
            ["I6.lvef: Order an echocardiogram"],
            "deceased on 2026-06-01: not a candidate",
            "deceased on 2026-06-01: not a candidate",
            id="excluded-apart-from-the-criteria",
        ),
        pytest.param(
            "possibly_eligible",
            [],
            ["I2: Record a SLEDAI-2K score (none)", "I6.lvef: Order an echocardiogram"],
            None,
            "I2: Record a SLEDAI-2K score (none)",
            id="possibly-cheapest-open-check",
        ),
        pytest.param(
            "likely_eligible",
            [],
            ["I7.hcg: Serum hCG within 7 days (manual)"],
            None,
            "I7.hcg: Serum hCG within 7 days (manual)",
            id="likely-cheapest-open-check",
        ),
        pytest.param("likely_eligible", [], [], None, None, id="nothing-open"),
    ],
)
def test_next_step(
    status: str, failures: list[str], steps: list[str], reason: str | None, expected: str | None
) -> None:
    assert next_step(status, failures, steps, reason) == expected


def test_a_result_and_its_stored_json_give_the_same_next_step(trial: TrialDefinition) -> None:
    failed = patient(trial, "Patient/f", {"I6.hgb": "fail", "I6.lvef": "unknown"})
    assert result_next_step(failed) == "fails I6.hgb: I6.hgb is fail"
    stored = orjson.loads(orjson.dumps(failed))
    assert "next_step" in stored
    del stored["next_step"]  # a result stored before the field existed
    assert stored_next_step(stored) == result_next_step(failed)
    assert stored_next_step({**stored, "next_step": "as stored"}) == "as stored"
