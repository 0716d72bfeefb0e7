"""Result text as labs write it (service/qualitative.py) read against the shipped table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.qualitative import (
    BoundedValue,
    Titer,
    normalize_result_text,
    parse_bounded_value,
    parse_titer,
    read_qualitative,
)
from service.terminology import Terminology, TerminologyError
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("  Negative ", "negative", id="padded"),
        pytest.param("（＋）", "+", id="full-width-brackets-and-plus"),
        pytest.param("(-)", "-", id="brackets"),
        pytest.param("[NEG]", "neg", id="square-brackets"),
        pytest.param("【阴性】", "阴性", id="chinese-brackets"),
        pytest.param("Not   Detected", "not detected", id="white-space"),
        pytest.param("−", "-", id="minus-sign"),
        pytest.param("(a) (b)", "(a) (b)", id="two-bracketed-parts-kept"),
    ],
)
def test_normalize_result_text(text: str, expected: str) -> None:
    assert normalize_result_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("阴性", "negative"),
        ("阳性", "positive"),
        ("弱阳性", "positive"),
        ("未检出", "negative"),
        ("检出", "positive"),
        ("未检测到", "negative"),
        ("检测到", "positive"),
        ("未检测到 (<15 IU/mL)", "negative"),
        ("低于检测下限", "negative"),
        ("+", "positive"),
        ("++", "positive"),
        ("+++", "positive"),
        ("＋＋", "positive"),
        ("±", "indeterminate"),
        ("(-)", "negative"),
        ("(+)", "positive"),
        ("（－）", "negative"),
        ("-", "negative"),
        ("POS", "positive"),
        ("NEG", "negative"),
        ("Pos", "positive"),
        ("Neg", "negative"),
        ("REACTIVE", "positive"),
        ("Non-Reactive", "negative"),
        ("nonreactive", "negative"),
        ("non reactive", "negative"),
        ("Weakly Reactive", "positive"),
        ("Not detected", "negative"),
        ("TND", "negative"),
        ("Indeterminate", "indeterminate"),
        ("Equivocal", "indeterminate"),
        ("borderline", "indeterminate"),
        ("可疑", "indeterminate"),
        ("阴性 0.12", "negative"),
        ("阴性0.12", "negative"),
        ("阴性(-)", "negative"),
        ("Negative (0.05 S/CO)", "negative"),
        ("POS 3.2 COI", "positive"),
        ("Reactive 1:16", "positive"),
        ("Detected <20 IU/mL", "positive"),
        ("Not detected, <10 IU/mL", "negative"),
    ],
)
def test_read_qualitative_from_the_shipped_table(
    terms: Terminology, text: str, expected: str
) -> None:
    assert terms.qualitative_of_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<20 IU/mL", id="below-loq-is-a-value-not-not-detected"),
        pytest.param("< 20", id="bound-with-space"),
        pytest.param("-5", id="a-negative-number-is-not-minus"),
        pytest.param("+ 3", id="a-symbol-counts-only-as-the-whole-text"),
        pytest.param("not negative", id="only-prefixes-are-tried"),
        pytest.param("1:16", id="a-titer-alone"),
        pytest.param("see comment", id="prose"),
        pytest.param("", id="empty"),
        pytest.param("低于定量下限", id="below-the-quantitation-limit-is-neither"),
    ],
)
def test_read_qualitative_does_not_guess(terms: Terminology, text: str) -> None:
    assert terms.qualitative_of_text(text) in (None, "indeterminate")


def test_read_qualitative_prefers_the_longest_prefix() -> None:
    table = {"not detected": "negative", "detected": "positive"}
    assert read_qualitative("not detected (0.0)", table) == "negative"  # type: ignore[arg-type]
    assert read_qualitative(None, table) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:16", Titer(16)),
        ("1：16", Titer(16)),
        ("1/160", Titer(160)),
        ("1 : 8", Titer(8)),
        ("Reactive (1:8)", Titer(8)),
        ("阳性 1:32", Titer(32)),
        ("<1:1", Titer(1, "<")),
        ("＜1:2", Titer(2, "<")),
        (">1:1024", Titer(1024, ">")),
        ("≥1:1024", Titer(1024, ">=")),
        ("1:1", Titer(1)),
    ],
)
def test_parse_titer(text: str, expected: Titer) -> None:
    assert parse_titer(text) == expected


@pytest.mark.parametrize("text", ["12/2025", "2:16", "1:0", "16", "reactive", None, "11:30"])
def test_parse_titer_refuses_what_is_no_titer(text: str | None) -> None:
    assert parse_titer(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<20 IU/mL", BoundedValue(20, "<", "IU/mL")),
        ("< 20", BoundedValue(20, "<", None)),
        ("＜20", BoundedValue(20, "<", None)),
        ("<=0.5", BoundedValue(0.5, "<=", None)),
        ("≤ 0.5", BoundedValue(0.5, "<=", None)),
        (">1000 copies/mL", BoundedValue(1000, ">", "copies/mL")),
        ("6.2 g/dL", BoundedValue(6.2, None, "g/dL")),
        ("5000 /uL", BoundedValue(5000, None, "/uL")),
        ("4.2 ×10⁹/L", BoundedValue(4.2, None, "×10^9/L")),
        ("61%", BoundedValue(61, None, "%")),
        # a unit that is a power of ten, as LIS interfaces write counts
        ("5.2 10^9/L", BoundedValue(5.2, None, "10^9/L")),
        ("0.4 10*9/L", BoundedValue(0.4, None, "10*9/L")),
        ("5.2 10E3/uL", BoundedValue(5.2, None, "10E3/uL")),
    ],
)
def test_parse_bounded_value(text: str, expected: BoundedValue) -> None:
    assert parse_bounded_value(text) == expected


@pytest.mark.parametrize(
    "text", ["1:16", "1/160", "阴性 0.12", "0.12 阴性", "negative", "", None, "5.2 10", "5.2 109/L"]
)
def test_parse_bounded_value_refuses_words_and_titers(text: str | None) -> None:
    assert parse_bounded_value(text) is None


# ------------------------------------------------ the value-set keys that steer reading
def _terms_with(tmp_path: Path, name: str, extra: str) -> Terminology:
    root = tmp_path / "terminology"
    shutil.copytree(ROOT / "terminology", root)
    path = root / "valuesets" / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("kind: lab\n", f"kind: lab\n{extra}\n", 1), encoding="utf-8")
    return Terminology.load(root)


def test_the_shipped_keys_are_read(terms: Terminology) -> None:
    assert terms.valuesets["hbsag"].interpretation_decides is True
    assert terms.valuesets["hcg_serum"].interpretation_decides is False
    assert terms.valuesets["rpr"].titer_reactive_at_any_dilution is True
    assert terms.valuesets["hiv_ab"].titer_reactive_at_any_dilution is False
    assert terms.valuesets["lvef"].fraction_below == 1.0
    assert terms.valuesets["hemoglobin"].fraction_below is None


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        pytest.param("creatinine", "interpretation_decides: yes please", id="flag-not-a-boolean"),
        pytest.param("creatinine", "fraction_below: -1", id="fraction-negative"),
        pytest.param("creatinine", "fraction_below: one", id="fraction-text"),
    ],
)
def test_malformed_keys_are_refused(tmp_path: Path, name: str, extra: str) -> None:
    with pytest.raises(TerminologyError, match=name):
        _terms_with(tmp_path, name, extra)
