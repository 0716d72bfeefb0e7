"""Reading result text as labs write it: qualitative words, titers and bounded values.

Pure functions over strings; the words themselves are data (terminology/results/
qualitative_text.csv), only the normalisation is code:

- NFKC (full-width `（＋）`, `＜20`, `1：16` become ASCII), case folded, white space collapsed,
  the minus sign `−` read as `-`, and one pair of surrounding brackets dropped (`(-)` is `-`);
- a word followed by a value or unit reads as the word: "阴性 0.12", "Negative (0.05 S/CO)",
  "POS 3.2", "Reactive 1:16". Only prefixes cut at a space, a bracket, a comma or a digit are
  tried, longest first, so "not detected" is never read as "detected". A prefix made only of
  symbols ("+", "-") counts only as the whole text: "-5" is a number, not "negative";
- a titer is `1:N` or `1/N` ("1:16", "1：16", "1/160", "<1:1", "≥1:1024"): the dilution N with
  its comparator;
- a bounded or plain number with an optional unit ("<20 IU/mL", "< 20", "＜20", ">1000") is a
  value, not a word: below the limit of quantitation is not "not detected".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from service.units import superscripts_to_caret

__all__ = [
    "BoundedValue",
    "Reading",
    "Titer",
    "normalize_result_text",
    "parse_bounded_value",
    "parse_titer",
    "read_qualitative",
]

# A word's reading: positive, negative, or known to be neither (equivocal, "±").
Reading = Literal["positive", "negative", "indeterminate"]

_BRACKETS = {"(": ")", "[": "]", "{": "}", "【": "】", "「": "」"}
_SIGNS = str.maketrans({"−": "-", "–": "-", "—": "-", "≦": "≤", "≧": "≥"})
# Where a prefix may end: before a space, bracket, comma or semicolon, or a digit.
_CUT = re.compile(r"(?=[\s(\[{,;:]|\d)")
_TITER = re.compile(r"(?<![\d.])(?P<cmp>[<>]=?|≤|≥)?\s*1\s*[:/]\s*(?P<n>\d+(?:\.\d+)?)(?![\d.:/])")
_VALUE = re.compile(
    r"^(?P<cmp>[<>]=?|≤|≥)?\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*"
    # a unit begins with a letter or symbol, or is a power of ten ("10^9/L", "10*3/uL", "10E9/L")
    r"(?P<unit>(?!/\d)(?:[A-Za-z%µμ×/\[{*^]|10[*^Ee]\d)[A-Za-z0-9%µμ×/\[\]{}*^.\- ]*)?$"
)
_COMPARATORS = {"≤": "<=", "≥": ">="}


@dataclass(frozen=True, slots=True)
class Titer:
    """A `1:N` titer: N, and the comparator when the lab wrote one ("<1:1")."""

    dilution: float
    comparator: str | None = None


@dataclass(frozen=True, slots=True)
class BoundedValue:
    """A number written as text, with its comparator and unit ("<20 IU/mL")."""

    value: float
    comparator: str | None
    unit: str | None


def normalize_result_text(text: str) -> str:
    """NFKC, case folded, one space between words, surrounding brackets and space dropped."""
    folded = " ".join(unicodedata.normalize("NFKC", text).translate(_SIGNS).casefold().split())
    while len(folded) >= 2 and _BRACKETS.get(folded[0]) == folded[-1]:
        inner = folded[1:-1].strip()
        if not inner or any(c in inner for c in "()[]{}"):
            break  # "(a) (b)" is not one bracketed text
        folded = inner
    return folded


def read_qualitative(text: str | None, table: Mapping[str, Reading]) -> Reading | None:
    """What a result's text says, from `table` (normalised text -> reading), or None.

    The whole text first, then its prefixes cut before a value or bracket, longest first.
    """
    if not text:
        return None
    folded = normalize_result_text(text)
    found = table.get(folded)
    if found is not None:
        return found
    cuts = sorted({m.start() for m in _CUT.finditer(folded) if m.start() > 0}, reverse=True)
    for cut in cuts:
        head = normalize_result_text(folded[:cut].rstrip(" ,;:([{"))
        if not any(c.isalpha() for c in head):
            continue  # "-5", "+ 3": a symbol counts only as the whole text
        found = table.get(head)
        if found is not None:
            return found
    return None


def parse_titer(text: str | None) -> Titer | None:
    """The titer written in `text` ("1:16", "1：16", "1/160", "Reactive 1:8", "<1:1")."""
    if not text:
        return None
    return _parse_titer(text) if type(text) is str else _parse_titer.__wrapped__(text)


# A population repeats its result texts: each is read once (the results are immutable).
@lru_cache(maxsize=4096)
def _parse_titer(text: str) -> Titer | None:
    folded = unicodedata.normalize("NFKC", text).translate(_SIGNS)
    match = _TITER.search(folded)
    if match is None:
        return None
    dilution = float(match["n"])
    if dilution < 1:
        return None
    comparator = match["cmp"]
    return Titer(dilution, _COMPARATORS.get(comparator, comparator) if comparator else None)


def parse_bounded_value(text: str | None) -> BoundedValue | None:
    """A value sent as text: "<20 IU/mL", "< 20", "＜20", ">1000 copies/mL", "6.2 g/dL".

    The whole text must be the number (with an optional comparator and unit): "阴性 0.12" and
    "1:16" are not values.
    """
    if not text:
        return None
    return _parse_bounded(text) if type(text) is str else _parse_bounded.__wrapped__(text)


@lru_cache(maxsize=4096)
def _parse_bounded(text: str) -> BoundedValue | None:
    folded = " ".join(
        unicodedata.normalize("NFKC", superscripts_to_caret(text)).translate(_SIGNS).split()
    )
    match = _VALUE.match(folded)
    if match is None:
        return None
    comparator = match["cmp"]
    unit = (match["unit"] or "").strip() or None
    return BoundedValue(
        float(match["num"]),
        _COMPARATORS.get(comparator, comparator) if comparator else None,
        unit,
    )
