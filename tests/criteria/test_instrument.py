"""The instrument files (trials/instruments/*.yaml): valid, as published, and refused when wrong."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.criteria.instrument import Instrument, read_instrument
from service.criteria.model import TrialError, load_trial, valuesets_named
from service.paths import parse_yaml
from tests.conftest import ROOT, TRIAL_PATH, load_nct, load_terms

INSTRUMENTS = ROOT / "trials" / "instruments"

# The published weights (Aringer 2019, Table 1; Gladman 2002): a typo in the data fails here.
EULAR_WEIGHTS = {
    "fever": ("constitutional", 2),
    "leukopenia": ("hematologic", 3),
    "thrombocytopenia": ("hematologic", 4),
    "autoimmune_hemolysis": ("hematologic", 4),
    "delirium": ("neuropsychiatric", 2),
    "psychosis": ("neuropsychiatric", 3),
    "seizure": ("neuropsychiatric", 5),
    "alopecia": ("mucocutaneous", 2),
    "oral_ulcers": ("mucocutaneous", 2),
    "scle_dle": ("mucocutaneous", 4),
    "effusion": ("serosal", 5),
    "pericarditis": ("serosal", 6),
    "joints": ("musculoskeletal", 6),
    "proteinuria": ("renal", 4),
    "ln_class_2_5": ("renal", 8),
    "ln_class_3_4": ("renal", 10),
    "antiphospholipid": ("antiphospholipid", 2),
    "low_c3_or_c4": ("complement", 3),
    "low_c3_and_c4": ("complement", 4),
    "sle_antibodies": ("sle_specific_antibodies", 6),
}
SLEDAI_WEIGHTS = {
    "seizure": 8,
    "psychosis": 8,
    "organic_brain_syndrome": 8,
    "cva": 8,
    "vasculitis": 8,
    "arthritis": 4,
    "myositis": 4,
    "urinary_casts": 4,
    "hematuria": 4,
    "proteinuria": 4,
    "pyuria": 4,
    "rash": 2,
    "alopecia": 2,
    "mucosal_ulcers": 2,
    "pleurisy": 2,
    "pericarditis": 2,
    "low_complement": 2,
    "dna_binding": 2,
    "fever": 1,
    "thrombocytopenia": 1,
    "leukopenia": 1,
}


def instrument(name: str) -> Instrument:
    return Instrument.model_validate(read_instrument(INSTRUMENTS / f"{name}.yaml"))


def test_eular_acr_2019_as_published() -> None:
    eular = instrument("eular_acr_2019")
    assert {i.id: (i.domain, i.weight) for i in eular.items} == EULAR_WEIGHTS
    assert (eular.threshold, eular.entry, eular.requires_clinical_item) == (10, "ana_1_80", True)
    assert eular.domain_rule == "highest_per_domain"
    assert eular.window_days is None  # an item counts if it occurred once, ever
    clinical = {i.id for i in eular.items if i.clinical}
    assert clinical == set(EULAR_WEIGHTS) - {
        "antiphospholipid",
        "low_c3_or_c4",
        "low_c3_and_c4",
        "sle_antibodies",
    }
    # the documented gap adds up to the published list
    assert [(n.label, n.weight) for n in eular.not_computed] == [("Acute cutaneous lupus", 6)]


def test_sledai_2k_as_published() -> None:
    sledai = instrument("sledai_2k")
    assert {i.id: i.weight for i in sledai.items} == SLEDAI_WEIGHTS
    assert sledai.domain_rule == "each_item"
    assert sledai.window_days == 30
    missing = {n.label: n.weight for n in sledai.not_computed}
    assert missing == {"Visual disturbance": 8, "Cranial nerve disorder": 8, "Lupus headache": 8}
    assert sum(SLEDAI_WEIGHTS.values()) + sum(missing.values()) == 105  # the published maximum


@pytest.mark.parametrize("path", sorted(INSTRUMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_instrument_value_sets_exist(path: Path) -> None:
    dumped = Instrument.model_validate(read_instrument(path)).model_dump()
    named: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("valuesets", "diagnoses", "medications") and isinstance(value, list):
                    named.update(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for entry in node:
                walk(entry)

    walk(dumped)
    missing = sorted(named - set(load_terms().valuesets))
    assert not missing, f"{path.name} names value sets not in terminology/: {missing}"


def test_the_trial_reads_the_instruments_value_sets() -> None:
    # what the FHIR fetch asks for comes from valuesets_named: the instruments' labs are in it
    named = valuesets_named(load_nct())
    assert {"ana", "c3", "c4", "anti_dsdna", "urine_rbc", "platelets", "body_temperature"} <= named


def _copy_trial(tmp_path: Path, mutate_instrument: Any = None, mutate_trial: Any = None) -> Path:
    target = tmp_path / "trials"
    (target / "instruments").mkdir(parents=True)
    raw = parse_yaml(TRIAL_PATH.read_text(encoding="utf-8"))
    if mutate_trial:
        mutate_trial(raw)
    (target / "NCT.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    for path in INSTRUMENTS.glob("*.yaml"):
        shutil.copy(path, target / "instruments" / path.name)
    if mutate_instrument:
        path = target / "instruments" / "eular_acr_2019.yaml"
        data = parse_yaml(path.read_text(encoding="utf-8"))
        mutate_instrument(data)
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return target / "NCT.yaml"


def test_an_instrument_beside_the_trial_is_the_one_used(tmp_path: Path) -> None:
    def raise_threshold(data: dict[str, Any]) -> None:
        data["threshold"] = 12

    trial = load_trial(_copy_trial(tmp_path, raise_threshold))
    spec = trial.criterion("I1").rule.classification  # type: ignore[union-attr]
    assert spec is not None
    assert spec.instrument.threshold == 12


@pytest.mark.parametrize(
    ("mutate_instrument", "mutate_trial", "message"),
    [
        (lambda d: d["items"][0].update(wieght=2), None, "wieght"),
        (lambda d: d["items"][0].update(findings=["no_such_finding"]), None, "unknown findings"),
        (lambda d: d.update(entry="nothing"), None, "entry names unknown finding"),
        (
            None,
            lambda t: t["criteria"][0]["rule"]["classification"].update(options={"typo": True}),
            "unknown options",
        ),
        (
            None,
            lambda t: t["criteria"][0]["rule"]["classification"].update(instrument="sledai_3k"),
            "instrument 'sledai_3k'",
        ),
    ],
    ids=["typo-in-key", "unknown-finding", "unknown-entry", "unknown-option", "missing-file"],
)
def test_a_wrong_instrument_is_refused_with_where(
    tmp_path: Path, mutate_instrument: Any, mutate_trial: Any, message: str
) -> None:
    with pytest.raises(TrialError) as caught:
        load_trial(_copy_trial(tmp_path, mutate_instrument, mutate_trial))
    assert message in str(caught.value)
    assert "NCT.yaml" in str(caught.value)
