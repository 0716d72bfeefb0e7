"""The typed `definition:` block, and the loader refusing a malformed one by file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from service.terminology import Terminology, TerminologyError
from service.vocab.definition import (
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    DefinitionError,
    parse_definition,
)

ROOT = Path(__file__).resolve().parents[2] / "terminology"


def test_parses_every_kind_of_entry() -> None:
    definition = parse_definition(
        {
            "include": [
                {"system": SNOMED, "ecl": "<< 55464009 |Systemic lupus erythematosus|"},
                {"system": ICD10CM, "prefixes": ["M32.1", "M32.8"]},
                {"system": RXNORM, "ingredients": ["3002"]},
                {"system": LOINC, "codes": ["718-7"]},
                {"valueset": "2.16.840.1.113883.3.464.1003.117.12.1010"},
            ],
            "exclude": [{"system": SNOMED, "ecl": "<< 68815009"}],
        },
        "x.yaml",
    )
    assert definition is not None
    assert [e.selector for e in definition.include] == [
        "ecl",
        "prefixes",
        "ingredients",
        "codes",
        "valueset",
    ]
    assert definition.include[1].roots() == ("M32.1", "M32.8")
    assert definition.exclude[0].ecl == "<< 68815009"


def test_no_block_is_none() -> None:
    assert parse_definition(None, "x.yaml") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"system": SNOMED}, "exactly one of"),
        ({"system": SNOMED, "ecl": "<< 55464009", "codes": ["55464009"]}, "exactly one of"),
        ({"ecl": "<< 55464009"}, "needs `system`"),
        ({"system": LOINC, "ecl": "<< 55464009"}, "SNOMED CT only"),
        ({"system": SNOMED, "prefixes": ["5546"]}, "ICD-10, ICD-10-CM and ATC only"),
        ({"system": SNOMED, "ingredients": ["3002"]}, "RxNorm only"),
        ({"system": RXNORM, "ingredients": [3002]}, "valid string"),  # strict: no ints
        ({"system": LOINC, "codes": []}, "non-empty list"),
        ({"system": LOINC, "codes": [" 718-7"]}, "without spaces"),
        ({"system": LOINC, "codes": ["718-7"], "note": "x"}, "Extra inputs"),
        ({"valueset": "http://x.org/ValueSet/a", "system": SNOMED}, "stands alone"),
        ({"valueset": "lupus"}, "URL or an OID"),
    ],
)
def test_refuses_malformed_entries(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as caught:
        parse_definition({"include": [entry]}, "terminology/valuesets/x.yaml")
    assert str(caught.value).startswith("terminology/valuesets/x.yaml: definition: include.0")


def test_refuses_empty_include_and_unknown_keys() -> None:
    with pytest.raises(DefinitionError, match="include"):
        parse_definition({"include": []}, "x.yaml")
    with pytest.raises(DefinitionError, match="Extra inputs"):
        parse_definition({"include": [{"system": LOINC, "codes": ["718-7"]}], "extra": 1}, "x")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT, tmp_path / "terminology")
    return tmp_path / "terminology"


def test_loader_reads_the_definition(copy: Path) -> None:
    path = copy / "valuesets" / "sle.yaml"
    text = path.read_text(encoding="utf-8")
    if "\ndefinition:" not in text:
        path.write_text(
            text + '\ndefinition:\n  include:\n    - {system: "http://snomed.info/sct", '
            'ecl: "<< 55464009"}\n',
            encoding="utf-8",
        )
    terms = Terminology.load(copy)
    definition = terms.valuesets["sle"].definition
    assert definition is not None
    assert any(entry.ecl is not None for entry in definition.include)


def test_loader_refuses_a_malformed_definition_naming_the_file(copy: Path) -> None:
    path = copy / "valuesets" / "hemoglobin.yaml"
    text = path.read_text(encoding="utf-8").split("\ndefinition:")[0]
    path.write_text(text + "\ndefinition:\n  include:\n    - {codes: ['718-7']}\n", "utf-8")
    with pytest.raises(TerminologyError, match=r"hemoglobin\.yaml: definition: include\.0"):
        Terminology.load(copy)
