"""The trial file: complete, exact criterion ids, and refused when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.criteria.model import TrialError, check_valuesets, load_trial, valuesets_named
from service.paths import parse_yaml
from tests.conftest import TRIAL_PATH, load_terms

INCLUSION = [
    "I1",
    "I2",
    "I3",
    "I4",
    "I5",
    "I6.wbc",
    "I6.anc",
    "I6.hgb",
    "I6.alt",
    "I6.ast",
    "I6.tbil",
    "I6.crcl",
    "I6.inr",
    "I6.pt",
    "I6.lvef",
    "I7.hcg",
    "I7.lactation",
    "I7.contraception",
    "I8",
]
EXCLUSION = [
    "E2",
    "E3",
    "E4",
    "E5",
    "E6",
    "E7",
    "E8",
    "E9",
    "E10.hbv",
    "E10.hcv",
    "E10.hiv",
    "E10.syphilis",
    "E11",
    "E12",
    "E13",
    "E14",
]
MANUAL = {"I7.hcg", "I7.lactation", "I7.contraception", "I8", "E14"}


def test_criterion_ids_are_the_contract() -> None:
    trial = load_trial(TRIAL_PATH)
    assert [c.id for c in trial.criteria if c.kind == "inclusion"] == INCLUSION
    assert [c.id for c in trial.criteria if c.kind == "exclusion"] == EXCLUSION
    assert {c.id for c in trial.criteria if c.assessment == "manual"} == MANUAL
    assert [(a.kind, a.number) for a in trial.absent_criteria] == [("exclusion", 1)]


def test_every_valueset_the_trial_names_exists() -> None:
    trial = load_trial(TRIAL_PATH)
    check_valuesets(trial, frozenset(load_terms().valuesets))
    assert "hemoglobin" in valuesets_named(trial)


def test_a_missing_valueset_is_refused() -> None:
    trial = load_trial(TRIAL_PATH)
    with pytest.raises(TrialError, match="hemoglobin"):
        check_valuesets(trial, frozenset({"sle"}))


def _write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = parse_yaml(TRIAL_PATH.read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["criteria"][7]["rule"].update(valu=60), "criteria.7.rule.measurement.valu"),
        (lambda t: t["criteria"][7]["rule"].update(type="threshold"), "criteria.7.rule"),
        (lambda t: t["criteria"][1].update(id="I1"), "appears twice"),
        (lambda t: t["criteria"][7]["rule"].pop("unit"), "value+unit or uln_multiple"),
        (
            lambda t: t["criteria"][27]["rule"]["fail_when"].append(["hbeag"]),
            "unknown test 'hbeag'",
        ),
    ],
    ids=["typo-in-key", "unknown-rule-type", "duplicate-id", "limit-without-unit", "unknown-test"],
)
def test_a_wrong_trial_file_is_refused_with_where(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TrialError) as caught:
        load_trial(_write(tmp_path, mutate))
    assert message in str(caught.value)
    assert "trial.yaml" in str(caught.value)


def test_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("criteria: [\n", encoding="utf-8")
    with pytest.raises(TrialError, match=r"broken\.yaml"):
        load_trial(path)
